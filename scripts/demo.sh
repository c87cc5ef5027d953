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
ids=$(mktemp)  # this run's ticket ids, one a line
serve_pid=""
keep_serve=""  # set once the demo went well at a terminal: its dashboard stays up
finish() {
    rm -f "$ids"
    if [[ -n "$serve_pid" && -z "$keep_serve" ]]; then
        kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true
    fi
    return 0
}
trap finish EXIT
create() {  # `ticket create ARGS`, showing its line and keeping the new ticket's id
    # (not `tee /dev/stderr`: that opens the file stderr names again, truncating a log
    # the demo's output is redirected to)
    local line
    line=$(se ticket create "$@")
    printf '%s\n' "$line"
    printf '%s\n' "$line" | sed -n 's/^ticket \([0-9][0-9]*\) created.*/\1/p' >>"$ids"
}

say "registering example agents and the text-report workflow (home: $SWARM_HOME)"
se agent register --all examples/agents --force
se workflow register examples/workflows/text-report --force

say "queueing tickets"
for i in 1 2 3 4; do
    create --title "nap $i" --agent sleeper --input seconds=1.5
done
create --title "count a proverb" --agent word-count \
    --input text="a journey of a thousand miles begins with a single step"
create --title "echo some JSON" --agent echo --inputs-json '{"hello": "world", "n": [1, 2, 3]}'
create --title "report" --workflow text-report \
    --description "tickets in, isolated agent runs out, every step recorded"
report=$(tail -n 1 "$ids")
create --title "a failing command" --agent fail
failing=$(tail -n 1 "$ids")
first=$(head -n 1 "$ids")
last=$(sqlite3 -cmd ".timeout 5000" "$(se db path)" \
    "INSERT INTO tickets (title, description, status, agent_id) VALUES ('from the sqlite3 shell', 'any writer can queue work', 'open', 'echo'); SELECT last_insert_rowid()")
echo "ticket $last inserted with sqlite3 (open)"

say "the web dashboard, to watch them run"
serve_log="$SWARM_HOME/dashboard.log"
for port in 8080 0; do  # 0: any free port, when 8080 is taken
    : >"$serve_log"
    .venv/bin/swarm-engine serve --port "$port" >/dev/null 2>"$serve_log" &  # its own pid in $!
    serve_pid=$!
    for _ in $(seq 100); do
        grep -q "serving the API on" "$serve_log" && break
        kill -0 "$serve_pid" 2>/dev/null || break
        sleep 0.1
    done
    url=$(sed -n 's/.*serving the API on \(http[^ ]*\).*/\1/p' "$serve_log")
    [[ -n "$url" ]] && break
    serve_pid=""
done
if [[ -n "$serve_pid" ]]; then
    echo "open $url/ui in a browser (tickets, runs, live logs, hosts)"
else
    echo "(no dashboard: see $serve_log)"
fi

say "running them: one engine, 4 sandboxes at a time, until the queue is empty"
se start --foreground --max-vms 4 --until-idle

say "results"
se ticket list --limit 9
se status
if [[ -n "$serve_pid" ]]; then
    if [[ -t 0 ]]; then  # a person at a terminal: leave the dashboard up to look around
        keep_serve=1
        echo "the dashboard stays up at $url/ui (stop it: kill $serve_pid)"
    fi  # otherwise `finish` stops it, as it does when anything above fails
fi
say "this run's tickets are $first to $last; to look closer, paste:"
printf '  export SWARM_HOME=%q\n' "$SWARM_HOME"
printf '  %q ticket show %s      # the workflow: its result and its 3 steps\n' "$PWD/.venv/bin/swarm-engine" "$report"
printf '  %q logs %s             # what the failing command printed\n' "$PWD/.venv/bin/swarm-engine" "$failing"
