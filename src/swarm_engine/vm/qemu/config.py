"""Options of the qemu backend (`backend_options.qemu` in config.toml)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from swarm_engine.errors import ConfigError
from swarm_engine.models import QEMU_MIN_MEMORY_MB

Accel = Literal["auto", "kvm", "tcg"]
TCG_TB_MB = 64
"""TCG's translation buffer per VM, in MiB (QEMU 7.2's default is 1 GiB). Only the part a
guest has filled is memory: ~10 MB for an idle restored guest after one command, more as
it runs new code (Python's start: ~30 MB more); below ~16 MB execs thrash on flushes
(docs/qemu.md, "TCG translation buffer")."""


IMAGE_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
"""What an image name may be: a folder name under `images_dir`, never a path."""
IMAGE_NAME_RULE = "1 to 63 of a-z, 0-9, '_', '.', '-', starting with a letter or digit"


def default_image() -> str:
    """The image booted when none is configured: $SWARM_QEMU_IMAGE, else `cloud` (lets a
    test or benchmark run pick the `tiny` image without editing any option). A value that
    is no image name is `ConfigError` (one line naming the variable, exit 5) for every
    command that reads it, never pydantic's error blamed on a config file."""
    value = os.environ.get("SWARM_QEMU_IMAGE") or "cloud"
    if re.fullmatch(IMAGE_NAME, value) is None:
        from swarm_engine.records import shown

        raise ConfigError(
            f"setting backend_options.qemu.image: {shown(value, 40)} is not an image name"
            f" ({IMAGE_NAME_RULE}) (in SWARM_QEMU_IMAGE)"
        )
    return value


class QemuOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["qemu"] = "qemu"
    accel: Accel = "auto"
    tcg_tb_mb: int = Field(default=TCG_TB_MB, ge=16, le=1024, strict=True)
    """TCG's translation buffer per VM in MiB (`-accel tcg,tb-size=N`): the most host
    memory a busy VM's translated code takes; smaller means more retranslation."""
    image: str = Field(default_factory=default_image, pattern=IMAGE_NAME, validate_default=True)
    """Image name under `images_dir`; default $SWARM_QEMU_IMAGE, else `cloud`."""
    images_dir: Path | None = None
    """Where images live; default $SWARM_QEMU_IMAGES, else `<home>/images`."""
    run_dir: Path | None = None
    """Where per-VM sockets and logs live; default `<home>/run/qemu`; a relative path is
    from the home."""
    snapshot: bool = True
    """Start guests from a saved template state (`-incoming`) instead of booting a kernel;
    the template is made on first use. Guests with network always boot cold."""
    snapshot_memory: Literal["mapped", "copy"] = "mapped"
    """`mapped`: clones map the template's guest RAM file copy-on-write (fast, memory
    shared); `copy`: each clone reads all of it into its own memory (docs/qemu.md)."""
    snapshot_dir: Path | None = None
    """Where template states live; default `<images_dir>/.snapshots` (shared by every home
    that uses those images), or `<home>/run/qemu-snapshots` if that is not writable."""
    mounts_dir: Path | None = None
    """Where host folders shown in guests (Claude Code) are cached as squashfs images;
    default `<images_dir>/.mounts`, or `<home>/run/qemu-mounts` if that is not writable."""
    mounts_keep: int = Field(default=3, ge=1, le=1000)
    """Images kept in `mounts_dir` (about 250 MB each for Claude Code): the most recently
    used of each host folder, this many in all; older ones are deleted after each pack,
    never one a VM is starting with (vm/qemu/mounts.py)."""
    warm: int = Field(default=0, ge=0, le=64)
    """Pre-booted VMs kept ready (for the default spec) so `boot` takes milliseconds."""
    qemu_binary: str = "qemu-system-x86_64"
    boot_timeout: float = Field(default=60.0, gt=0, le=600)
    kill_grace: float = Field(default=10.0, gt=0, le=600)
    """Seconds past an exec timeout before the host gives up on the guest and kills the VM."""
    console_log: bool = True
    """Keep the guest's serial console in `<run_dir>/<vm>/console.log` (for `vm doctor`)."""
    default_memory_mb: int = Field(default=512, ge=QEMU_MIN_MEMORY_MB, le=65536)
    """MiB of the warm pool's VMs only (`warm`): a step's VM, of an agent without a `vm:`
    block too, gets the agent's size (`vm.memory_mb`, else its `memory_mb`: `spec_for` in
    vm/pool.py, the same under every backend) and takes a warm VM only when that matches."""
    default_vcpus: int = Field(default=1, ge=1, le=64)
    """vCPUs of the warm pool's VMs only, as `default_memory_mb`."""
