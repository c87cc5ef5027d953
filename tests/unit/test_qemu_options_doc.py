"""Every qemu option is a row of docs/qemu.md's options table (`default_memory_mb` and
`default_vcpus` were not), and those two size the warm pool only: an agent without a
`vm:` block gets its own `memory_mb` and `vcpus`, whatever the qemu options say."""

from __future__ import annotations

import re
from pathlib import Path

from swarm_engine.models import AgentSpec
from swarm_engine.vm.pool import spec_for
from swarm_engine.vm.qemu.backend import QemuBackend
from swarm_engine.vm.qemu.config import QemuOptions

DOC = Path(__file__).resolve().parents[2] / "docs" / "qemu.md"


def options_table() -> set[str]:
    text = DOC.read_text()
    start = text.index("| option | default | meaning |")
    table = text[start : text.index("\n\n", start)]
    return set(re.findall(r"^\| `([a-z_0-9]+)` \|", table, re.M))


def test_every_qemu_option_is_in_the_options_table() -> None:
    options = set(QemuOptions.model_fields) - {"backend"}  # (the table's own section)
    assert options - options_table() == set()
    assert options_table() - options == set()


def test_the_default_size_is_the_warm_pools_not_an_agents(tmp_path: Path) -> None:
    options = QemuOptions(warm=1, default_memory_mb=1024, default_vcpus=2)
    backend = QemuBackend(tmp_path, options)
    pool = backend.warm_pool
    assert pool is not None and (pool.spec.memory_mb, pool.spec.vcpus) == (1024, 2)
    agent = AgentSpec(name="plain", kind="shell", command=["true"])  # no `vm:` block
    spec = spec_for(agent.vm.model_dump(), agent.memory_mb, agent.vcpus, 60)
    assert (spec.memory_mb, spec.vcpus) == (512, 1)  # the agent's own defaults
    assert not pool.matches(spec, options.image)  # so the pool does not serve it
