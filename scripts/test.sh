#!/usr/bin/env bash
# The test command: set up (including QEMU), build or restore the microVM image from its
# cache, then run the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --vm
export SWARM_QEMU_IMAGES="${SWARM_QEMU_IMAGES:-${SWARM_IMAGE_CACHE:-/var/cache/swarm-engine}/current}"
PYTHON=.venv/bin/python bash scripts/build-images.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
