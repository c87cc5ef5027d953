from swarm_engine.cli.main import main

main()
