#!/usr/bin/env bash
# Set up swarm-engine on a Debian/Ubuntu machine: system packages, then a venv in .venv.
#
#   bash scripts/setup.sh          # the embedded defaults (process sandbox)
#   bash scripts/setup.sh --vm     # also QEMU and the image-build tools (microVM backend)
#
# Idempotent: installs only what is missing; runs `apt-get update` only when it must install.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(bubblewrap passt sqlite3 util-linux e2fsprogs)  # passt: pasta, for agents' allowed_ports; e2fsprogs: mke2fs, the workspaces' disk cap
if [[ "${1:-}" == "--vm" ]]; then
    packages+=(postgresql iproute2)  # the tests start a throwaway PostgreSQL cluster
    packages+=(chromium)  # the dashboard's browser test (Playwright drives /usr/bin/chromium)
    # npm: installs Claude Code (kind claude-code) into its cache; a Node that came with
    # its own npm (nodesource) must not get Debian's npm on top
    command -v npm >/dev/null || packages+=(npm)
fi
if [[ "${1:-}" == "--vm" ]]; then
    packages+=(qemu-system-x86 busybox-static squashfs-tools debootstrap cpio lz4 gcc libc6-dev)
    packages+=(make bc flex bison libelf-dev xz-utils)  # only for `vm image build --kernel tiny`
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv"
    "$python" -m venv .venv
fi
stamp=.venv/.installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp || constraints.txt -nt $stamp ]]; then
    echo "setup: installing swarm-engine into .venv (versions pinned by constraints.txt)"
    # (pip's notes about unused local index locations are noise here, so they are dropped)
    .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' \
        2> >(grep -v "^WARNING: Location" >&2)
    touch "$stamp"
fi
echo "setup: ready ($(.venv/bin/swarm-engine --version))"
