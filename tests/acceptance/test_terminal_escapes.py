"""Every line the CLI prints with text from a row, an agent or a step escapes control
characters (C0 but where a block keeps newline and tab, DEL, C1) and bidi controls the
same way (`cli.text.visible`): a step that writes an OSC title sequence, a clear screen and
a forged line, or a right-to-left override, reaches the terminal as `\\xNN` (`\\uNNNN`) through
`run-ticket --wait` (its progress lines and its final `error:` line), the foreground
engine, `ticket show` and `logs`, real processes all."""

from __future__ import annotations

from pathlib import Path

from tests.acceptance.conftest import write_agent
from tests.support.cli import swarm

TITLE_SEQUENCE = r"X\033]0;PWNED\007\033[2J\033[1;1HFAKE all good"
"""What the hostile step prints (printf's octal escapes): a window title, clear, home."""
ESCAPED = "X\\x1b]0;PWNED\\x07\\x1b[2J\\x1b[1;1HFAKE all good"

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
BIDI_ESCAPED = "".join(f"\\u{ord(c):04x}" for c in BIDI)
RAW = ("\x1b", "\x07", "\x9b", "\x7f", *BIDI)


def octal(text: str) -> str:
    """`text` as printf's octal escapes of its UTF-8 bytes (YAML and sh see only ASCII)."""
    return "".join(f"\\{b:03o}" for b in text.encode())


def assert_clean(*texts: str) -> None:
    for text in texts:
        found = [f"U+{ord(c):04X}" for c in RAW if c in text]
        assert not found, (found, text)


def register(home: Path, tmp_path: Path) -> None:
    write_agent(
        tmp_path / "pkg" / "hostile",
        f"""
        name: hostile
        kind: shell
        command: 'printf "{TITLE_SEQUENCE}\\n" >&2; exit 1'
        """,
    )
    write_agent(
        tmp_path / "pkg" / "rtl",
        f"""
        name: rtl
        kind: shell
        command: 'printf "left{octal(BIDI)}right\\n"'
        """,
    )
    swarm(home, "agent", "register", "--all", str(tmp_path / "pkg"), check=True)


def test_run_ticket_escapes_step_output_on_both_streams(home: Path, tmp_path: Path) -> None:
    register(home, tmp_path)
    swarm(home, "ticket", "create", "--title", "t", "--agent", "hostile", check=True)
    done = swarm(home, "run-ticket", "1", "--wait")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert_clean(done.stdout, done.stderr)
    assert "step main failed in " in done.stdout and ESCAPED in done.stdout, done.stdout
    assert done.stderr.startswith("error: ticket 1 failed: "), done.stderr
    assert ESCAPED in done.stderr, done.stderr


def test_ticket_show_and_logs_escape_bidi_controls(home: Path, tmp_path: Path) -> None:
    register(home, tmp_path)
    swarm(home, "ticket", "create", "--title", f"a{BIDI}b", "--agent", "rtl", check=True)
    done = swarm(home, "run-ticket", "1", "--wait", check=True)
    assert_clean(done.stdout, done.stderr)
    for args in (("ticket", "show", "1"), ("logs", "1"), ("logs", "1", "--follow")):
        shown = swarm(home, *args, check=True)
        assert_clean(shown.stdout, shown.stderr)
        assert f"left{BIDI_ESCAPED}right" in shown.stdout, (args, shown.stdout)
    assert f"a{BIDI_ESCAPED}b" in swarm(home, "ticket", "show", "1", check=True).stdout


def test_the_foreground_engine_escapes_titles_and_errors(home: Path, tmp_path: Path) -> None:
    register(home, tmp_path)
    swarm(home, "ticket", "create", "--title", "a\u202eb\u061c", "--agent", "hostile", check=True)
    done = swarm(home, "start", "--foreground", "--until-idle", check=True)
    assert_clean(done.stdout, done.stderr)
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("ticket 1 ")]
    assert "(a\\u202eb\\u061c)" in line and "X\\x1b]0;PWNED\\x07" in line, line


def test_the_error_handler_escapes_any_message(tmp_path: Path) -> None:
    """`error:` lines quote what was typed (a path), a row's or an agent's text."""
    bad = f"{tmp_path}/x\x1b]0;PWNED\x07{BIDI}"
    for args in (("--home", bad, "status"), ("--config", bad, "status")):
        done = swarm(tmp_path / "home", *args)
        assert done.returncode != 0
        assert_clean(done.stdout, done.stderr)
        assert done.stderr.startswith("error: "), done.stderr
        assert f"x\\x1b]0;PWNED\\x07{BIDI_ESCAPED}" in done.stderr, done.stderr
