#!/usr/bin/env bash
# The demo: set up, register the example agents and workflow, queue a mix of tickets,
# and let one engine run them in parallel sandboxes (embedded defaults), then show results.
# Its data lives in .demo-home/ (start over: rm -rf .demo-home).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export SWARM_HOME="${SWARM_HOME:-$PWD/.demo-home}"
se() { .venv/bin/swarm-engine "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "registering example agents and the text-report workflow (home: $SWARM_HOME)"
se agent register --all examples/agents --force
se workflow register examples/workflows/text-report --force

say "queueing tickets"
for i in 1 2 3 4; do
    se ticket create --title "nap $i" --agent sleeper --input seconds=1.5
done
se ticket create --title "count a proverb" --agent word-count \
    --input text="a journey of a thousand miles begins with a single step"
se ticket create --title "echo some JSON" --agent echo --inputs-json '{"hello": "world", "n": [1, 2, 3]}'
se ticket create --title "report" --workflow text-report \
    --description "tickets in, isolated agent runs out, every step recorded"
se ticket create --title "a failing command" --agent fail
sqlite3 "$SWARM_HOME/tickets.db" \
    "INSERT INTO tickets (title, description, status, agent_id) VALUES ('from the sqlite3 shell', 'any writer can queue work', 'open', 'echo')"

say "running them: one engine, 4 sandboxes at a time, until the queue is empty"
se start --foreground --max-vms 4 --until-idle

say "results"
se ticket list --limit 9
se status
say "try: se ticket show 7   (se = $PWD/.venv/bin/swarm-engine, SWARM_HOME=$SWARM_HOME)"
