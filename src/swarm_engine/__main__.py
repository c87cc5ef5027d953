from swarm_engine.cli.entry import main

main()
