"""A guest image whose `manifest.json` is JSON but no manifest (a list, a number as its
kernel command line, a NUL, a huge file) is one line wherever it is read: `vm image list`
and `vm doctor` say which image cannot be read (they ended in a traceback:
`'list' object has no attribute 'get'`), and `run-ticket` refuses before the claim,
exit 7, the ticket left open (it was claimed and failed as `could not boot a VM`, an
attempt spent). No VM is booted: the manifest is refused first."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from tests.support.cli import swarm

from swarm_engine.vm.qemu.image import FILES, MANIFEST_BYTES

ODD = [
    ("a list", "[]", "not a JSON object (an array)"),
    ("null", "null", "not a JSON object (null)"),
    ("an empty object", "{}", "no cmdline (not a manifest `vm image build` wrote)"),
    ("a null built_at", '{"cmdline": "x", "built_at": null}', "no built_at"),
    ("an empty cmdline", '{"cmdline": " ", "built_at": "x"}', "no cmdline"),
    ("a number as cmdline", '{"cmdline": 5, "built_at": "x"}', "cmdline is not text"),
    (
        "an object as machine",
        '{"cmdline": "x", "built_at": "x", "machine": {"a": 1}}',
        "machine is not text",
    ),
    (
        "a NUL in cmdline",
        '{"cmdline": "a\\u0000b", "built_at": "x"}',
        "cmdline holds a NUL or a line break",
    ),
    (
        "a 60 KB cmdline",
        '{"cmdline": "' + "a=b " * 15000 + '", "built_at": "x"}',
        "cmdline is longer than 1024 bytes",
    ),
    ("a huge file", '{"pad": "' + "x" * MANIFEST_BYTES + '"}', "more than 64 KiB"),
]


@pytest.mark.parametrize(("what", "text", "said"), ODD, ids=[o[0] for o in ODD])
def test_an_odd_manifest_is_one_line_everywhere(
    tmp_path: Path, what: str, text: str, said: str
) -> None:
    images = tmp_path / "images"
    (images / "odd").mkdir(parents=True)
    for name in FILES:
        (images / "odd" / name).write_bytes(b"\0")
    (images / "odd" / "manifest.json").write_text(text)
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'backend = "qemu"\n[backend_options.qemu]\nimage = "odd"\nimages_dir = "{images}"\n'
    )
    line = f"qemu image 'odd': unreadable manifest: {said}"

    listed = swarm(home, "vm", "image", "list", "--json")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert json.loads(listed.stdout) == []
    doctor = swarm(home, "vm", "doctor")
    assert doctor.returncode != 0 and "Traceback" not in doctor.stdout + doctor.stderr
    assert line in doctor.stdout, doctor.stdout
    assert doctor.stderr.count("\n") == 1 and line in doctor.stderr, doctor.stderr

    made = swarm(home, "ticket", "create", "--agent", "echo", "--title", "t", "--input", "k=v")
    assert made.returncode == 0, made.stderr
    ran = swarm(home, "run-ticket", "1", "--wait", timeout=60)
    assert ran.returncode == 7, ran.stdout + ran.stderr
    assert ran.stderr.count("\n") == 1 and line in ran.stderr, ran.stderr
    with sqlite3.connect(home / "tickets.db") as conn:
        assert conn.execute("SELECT status, attempts FROM tickets").fetchall() == [("open", 0)]
    conn.close()
