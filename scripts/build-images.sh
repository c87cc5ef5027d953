#!/usr/bin/env bash
# Build the qemu guest image, or restore it from a cache keyed on a hash of its recipe
# (the builder, the guest init and agent, in C). Idempotent; called
# by .ci/run.
#
#   SWARM_IMAGE_CACHE   cache root (default /var/cache/swarm-engine); images go to
#                       $SWARM_IMAGE_CACHE/images/<recipe-hash>/
#   SWARM_IMAGE_KERNEL  cloud (default) or tiny (a kernel built from linux-source-6.1:
#                       4 to 10 more minutes on 2 cores on a cache miss)
#   SWARM_QEMU_IMAGES   where the engine looks for images (default: <home>/images)
#   PYTHON              the Python with swarm_engine installed (default: python3)
#
# Needs (see docs/qemu.md): qemu-system-x86 busybox-static squashfs-tools debootstrap
# lz4 dpkg apt gcc libc6-dev (the guest init and agent are static C programs); root
# (debootstrap) when the cache is empty. The tiny kernel also needs: make flex bison bc libelf-dev xz-utils perl.
set -euo pipefail

PY=${PYTHON:-python3}
CACHE_ROOT=${SWARM_IMAGE_CACHE:-/var/cache/swarm-engine}
KERNEL=${SWARM_IMAGE_KERNEL:-cloud}

log() { printf 'build-images: %s\n' "$*" >&2; }

IMAGES=${SWARM_QEMU_IMAGES:-$("$PY" -c 'from swarm_engine.config import load_settings; print(load_settings().images_dir)')}
HASH=$("$PY" -c "from swarm_engine.vm.qemu.image import recipe_hash; print(recipe_hash('$KERNEL'))")
TARGET="$IMAGES/$KERNEL"
CACHED="$CACHE_ROOT/images/$HASH"

current_recipe() {
    "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("recipe",""))' "$1/manifest.json" 2>/dev/null || true
}

mkdir -p "$IMAGES"
if [ -f "$TARGET/manifest.json" ] && [ "$(current_recipe "$TARGET")" = "$HASH" ]; then
    log "image $KERNEL is up to date ($TARGET, recipe $HASH)"
    exit 0
fi

if [ -f "$CACHED/manifest.json" ] && [ "$(current_recipe "$CACHED")" = "$HASH" ]; then
    log "restoring image $KERNEL from $CACHED"
    rm -rf "$TARGET.restore"
    cp -a "$CACHED" "$TARGET.restore"
    rm -rf "$TARGET.old"
    if [ -e "$TARGET" ]; then mv "$TARGET" "$TARGET.old"; fi
    mv "$TARGET.restore" "$TARGET"
    rm -rf "$TARGET.old"
    exit 0
fi

case "$KERNEL" in
    tiny) log "no cached image for recipe $HASH; building from scratch (5 to 15 minutes on 2 cores)" ;;
    *) log "no cached image for recipe $HASH; building from scratch (1 to 4 minutes on 2 cores)" ;;
esac
SWARM_QEMU_IMAGES="$IMAGES" "$PY" - "$IMAGES" "$KERNEL" <<'PYEOF'
import sys
from pathlib import Path
from swarm_engine.vm.qemu.builder import BuildRequest, build_image
images, kernel = Path(sys.argv[1]), sys.argv[2]
build_image(BuildRequest(images_dir=images, name=kernel, kernel=kernel,
                         progress=lambda m: print(f"build-images: {m}", file=sys.stderr)))
PYEOF

if mkdir -p "$CACHE_ROOT/images" 2>/dev/null && [ -w "$CACHE_ROOT/images" ]; then
    rm -rf "$CACHED.tmp"
    cp -a "$TARGET" "$CACHED.tmp"
    rm -rf "$CACHED"
    mv "$CACHED.tmp" "$CACHED"
    log "cached the image in $CACHED"
else
    log "cache $CACHE_ROOT is not writable; not caching"
fi
