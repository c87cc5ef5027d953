#!/usr/bin/env bash
# The test command: set up (including QEMU), build or restore the microVM images from their
# cache (the default `cloud` image and the fast-booting `tiny` one), lint and type-check, run
# the QEMU suites on `tiny`, then the whole suite on the default image (in parallel workers).
# Extra arguments go to the main pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
# checked first, before the set-up and the QEMU suites: unset or empty means 4
workers="${SWARM_TEST_WORKERS:-4}"
if [[ ! $workers =~ ^[0-9]{1,3}$ ]] || (( 10#$workers > 64 )); then
    echo "error: SWARM_TEST_WORKERS must be a whole number from 0 to 64 (0 runs the suite in one process), not '$workers'" >&2
    exit 2
fi
workers=$((10#$workers))
bash scripts/setup.sh --vm
export SWARM_QEMU_IMAGES="${SWARM_QEMU_IMAGES:-${SWARM_IMAGE_CACHE:-/var/cache/swarm-engine}/current}"
PYTHON=.venv/bin/python bash scripts/build-images.sh
SWARM_IMAGE_KERNEL=tiny PYTHON=.venv/bin/python bash scripts/build-images.sh
# Claude Code (kind claude-code), installed once per version into its cache folder
.venv/bin/python -m swarm_engine.agents.claude_code.install || echo "claude-code not installed: its tests will say why"
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
echo "== the QEMU suites on the tiny-kernel image =="
SWARM_QEMU_IMAGE=tiny .venv/bin/python -m pytest -q -k "not process" \
    tests/integration/test_vm_contract.py tests/integration/test_qemu_backend.py \
    tests/integration/test_qemu_escape.py tests/acceptance/test_qemu_engine.py
echo "== the whole suite (default image) =="
# In SWARM_TEST_WORKERS parallel workers (pytest-xdist; 4 by default: most of a test's time
# is spent waiting on processes, VMs and the store, not on the 2 cores), each test file on
# one worker in file order, as its module-scoped fixtures expect. 0 runs it in this process.
.venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
