"""`swarm-engine vm ...`: build and list qemu guest images, and check the host."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from swarm_engine.cli.app import example
from swarm_engine.config import Settings, load_settings
from swarm_engine.errors import VMError
from swarm_engine.vm.options import as_mapping
from swarm_engine.vm.qemu.builder import BuildRequest, build_image
from swarm_engine.vm.qemu.config import QemuOptions
from swarm_engine.vm.qemu.doctor import Check, run_boot_check, run_checks
from swarm_engine.vm.qemu.folders import images_dir_for
from swarm_engine.vm.qemu.image import list_images

if TYPE_CHECKING:
    from swarm_engine.vm.process_config import ProcessConfig

MARK = {"ok": "[green]ok[/green]  ", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]",
        "info": "[dim]info[/dim]"}  # fmt: skip


def _qemu_options(settings: Settings) -> QemuOptions:
    options = settings.backend_options.get("qemu")
    return options if isinstance(options, QemuOptions) else QemuOptions()


def _images_dir(settings: Settings) -> Path:
    return _qemu_options(settings).images_dir or images_dir_for(settings.home)


@click.group(
    "vm",
    short_help="MicroVMs: guest images, and what works on this host.",
    epilog=example("swarm-engine vm doctor"),
)
def vm_group() -> None:
    """MicroVMs: guest images for the qemu backend, and what works on this host."""


@vm_group.group("image", epilog=example("swarm-engine vm image list"))
def image_group() -> None:
    """Guest images (kernel, initramfs with the guest agent, Python root filesystem)."""


@image_group.command("build", epilog=example("swarm-engine vm image build --kernel tiny"))
@click.option("--kernel", type=click.Choice(["cloud", "tiny"]), default="cloud", show_default=True,
              help="Debian's cloud kernel (a build takes 1 to 4 minutes on 2 cores), or a tiny "
                   "kernel compiled from linux-source (boots faster; 5 to 15 minutes).")  # fmt: skip
@click.option("--name", metavar="NAME", help="Image name (default: the kernel kind).")
@click.option("--suite", default="bookworm", show_default=True, metavar="SUITE",
              help="Debian suite of the root filesystem.")  # fmt: skip
@click.option("--mirror", default="http://deb.debian.org/debian", show_default=True,
              metavar="URL", help="Debian mirror that debootstrap downloads from.")  # fmt: skip
@click.option("--force", is_flag=True, help="Rebuild even if the image is up to date.")
@click.pass_obj
def image_build(
    settings: Settings, kernel: str, name: str | None, suite: str, mirror: str, force: bool
) -> None:
    """Build a guest image into the home folder's image cache (idempotent)."""
    from swarm_engine.cli.output import err_console, plain

    request = BuildRequest(
        images_dir=_images_dir(settings),
        name=name or kernel,
        kernel="tiny" if kernel == "tiny" else "cloud",
        suite=suite,
        mirror=mirror,
        force=force,
        progress=lambda msg: err_console.print(f"[dim]vm image build:[/dim] {plain(msg)}"),
    )
    image = build_image(request)
    click.echo(str(image.path))


@image_group.command("list", epilog=example("swarm-engine vm image list --json"))
@click.option("--json", "as_json", is_flag=True, help="Print the images as a JSON list.")
@click.pass_obj
def image_list(settings: Settings, as_json: bool) -> None:
    """List the built guest images."""
    from swarm_engine.cli.output import Col, console, emit_json, plain, table

    images = list_images(_images_dir(settings))
    if as_json:
        emit_json([{**i.manifest, "path": str(i.path), "size_bytes": i.size_bytes(),
                    "stale": i.stale} for i in images])  # fmt: skip
        return
    if not images:
        console.print(
            f"no images in {plain(_images_dir(settings))} (build one: swarm-engine vm image build)"
        )
        return
    rows = [(i.name, i.manifest.get("kernel_version", "?"), f"{i.size_bytes() / 1e6:.0f} MB",
             i.manifest.get("built_at", "?"), "stale" if i.stale else "current", i.path)
            for i in images]  # fmt: skip
    columns: list[str | Col] = [Col("name", flex=True, min=6), Col("kernel", flex=True, min=10), "size", "built",
               "state", Col("path", flex=True, min=12)]  # fmt: skip
    console.print(table(None, columns, rows))


@vm_group.command("doctor", epilog=example("swarm-engine vm doctor --boot"))
@click.option("--boot", is_flag=True, help="Also boot a test VM and time it.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as a JSON list.")
@click.pass_obj
def doctor(settings: Settings, boot: bool, as_json: bool) -> None:
    """Explain what works on this host: qemu, KVM or TCG, images, build tools."""
    from swarm_engine.cli.output import console, emit_json, piped, plain

    options = _qemu_options(settings)
    images_dir = _images_dir(settings)
    checks: list[Check] = _process_checks(settings)
    checks += run_checks(images_dir, options.qemu_binary, options.image)
    if boot and not any(c.level == "fail" for c in checks):
        booted = {**as_mapping(options), "images_dir": str(images_dir), "image": options.image}
        checks.append(run_boot_check(settings.home, booted))
    if as_json:
        emit_json([c.__dict__ for c in checks])
    else:
        for c in checks:
            console.print(  # (a check is one line in a pipe: `grep` finds it whole)
                f"{MARK[c.level]} [bold]{plain(c.name)}[/bold]: {plain(c.message)}",
                soft_wrap=piped(),
            )
    # the exit status answers "can the default backend run steps here?"
    failing = [
        c
        for c in checks
        if c.level == "fail" and (settings.backend != "process" or c.name.startswith("process"))
    ]
    if failing:
        raise VMError(f"the {settings.backend} backend cannot run steps here: {failing[0].message}")


def _process_checks(settings: Settings) -> list[Check]:
    """The process sandbox: does bubblewrap isolate here, can declared ports be given, and
    can each workspace be capped at disk_mb."""
    try:
        from swarm_engine.vm.process import ProcessConfig
    except ImportError:
        return []
    options = settings.backend_options.get("process")
    config = options if isinstance(options, ProcessConfig) else ProcessConfig()
    return [
        *_isolation_checks(config.isolation),
        _disk_cap_check(config, settings.home / "vms" if settings.home.is_dir() else None),
        _memory_cap_check(config),
    ]


def _isolation_checks(isolation: str) -> list[Check]:
    from swarm_engine.vm.process import HOW_TO_FIX, bwrap_problem, pasta_problem

    if isolation == "none":
        return [Check("process backend", "warn", 'isolation = "none": steps run on the host '
                      "with the engine's user, files and network, unisolated; remove it to "
                      "sandbox them with bubblewrap")]  # fmt: skip
    problem = bwrap_problem()
    if problem:
        return [Check("process backend", "fail", f"{problem}: every step on the process "
                      f"backend is refused; to fix: {HOW_TO_FIX}")]  # fmt: skip
    checks = [Check("process backend", "ok", "bubblewrap works: each step gets its own "
                    "namespaces, an unprivileged uid without capabilities, and no network")]  # fmt: skip
    ports = pasta_problem()
    if ports:
        checks.append(Check("process network", "warn", f"{ports}: a step whose agent declares "
                            "network ports is refused on the process backend"))  # fmt: skip
    else:
        checks.append(Check("process network", "ok", "pasta works: an agent's allowed_ports "
                            "reach the same ports on the host's 127.0.0.1, nothing else"))  # fmt: skip
    return checks


def _disk_cap_check(config: ProcessConfig, vms: Path | None) -> Check:
    """Whether each workspace can be a filesystem of `disk_mb` here (`vm/diskcap.py`)."""
    from swarm_engine.errors import VMError
    from swarm_engine.vm.diskcap import DiskCapError, Template, how_to_fix

    if config.disk_cap == "measured":
        return Check("process disk cap", "warn", 'disk_cap = "measured": a workspace is '
                     "measured every 50 ms, and a fast writer overshoots disk_mb meanwhile")  # fmt: skip
    try:
        Template.build(config.disk_mb, config.max_files, vms).close()
    except DiskCapError as exc:
        return Check("process disk cap", "fail", f"{exc}: every step on the process backend "
                     f"is refused; to fix: {how_to_fix(exc)}")  # fmt: skip
    except VMError as exc:  # a shortage of the host now: steps wait for it, then go on
        return Check("process disk cap", "warn", str(exc))
    return Check("process disk cap", "ok", f"each workspace is a filesystem of its own of "
                 f"{config.disk_mb} MiB and {config.max_files} files: the kernel refuses "
                 "writes past them")  # fmt: skip


def _memory_cap_check(config: ProcessConfig) -> Check:
    """Whether each VM can be a memory cgroup of its own here (`vm/memcap.py`)."""
    from swarm_engine.errors import VMError
    from swarm_engine.vm.memcap import Groups, MemCapError, how_to_fix

    if config.memory_cap == "rlimit":
        return Check("process memory cap", "warn", 'memory_cap = "rlimit": only each '
                     "process's address space is limited; memfd, tmpfs, pipes and many "
                     "processes hold more than memory_mb")  # fmt: skip
    try:
        groups = Groups.make()
    except MemCapError as exc:
        return Check("process memory cap", "fail", f"{exc}: every step on the process backend "
                     f"is refused; to fix: {how_to_fix()}")  # fmt: skip
    except VMError as exc:  # a shortage of the host now: steps wait for it, then go on
        return Check("process memory cap", "warn", str(exc))
    groups.close()
    return Check("process memory cap", "ok", f"each VM is a memory cgroup of its own (cgroup "
                 f"v{groups.hierarchy.version}, below {groups.hierarchy.base}): the kernel "
                 "holds its processes to memory_mb, no swap past it")  # fmt: skip


if __name__ == "__main__":  # used by scripts/build-images.sh before the CLI is installed
    vm_group(obj=load_settings())
