"""The house rule (STYLE.md 9): tests wait on conditions, not on `sleep`. Every sleep in
the tests says why it is no guess (`# sleep-ok: why`, on its line or the one above): a
condition wait's poll interval, a pause the test is about. `asyncio.sleep(0)` is a yield
to the loop, not a wait, and needs no reason."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SLEEPS = {("time", "sleep"), ("asyncio", "sleep")}


def unexplained_sleeps(path: Path, root: Path) -> list[str]:
    """`file:line: code` of each `time.sleep`/`asyncio.sleep` call in `path` without a
    `sleep-ok` reason."""
    source = path.read_text(encoding="utf-8")
    lines = ["", *source.splitlines()]
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and (node.func.value.id, node.func.attr) in SLEEPS
        ):
            continue
        if [ast.dump(a) for a in node.args] == [ast.dump(ast.Constant(0))]:
            continue  # a yield to the event loop
        if "sleep-ok" not in lines[node.lineno] + lines[node.lineno - 1]:
            found.append(f"{path.relative_to(root)}:{node.lineno}: {lines[node.lineno].strip()}")
    return found


def test_every_sleep_in_the_tests_says_why_it_is_no_guess() -> None:
    found = [h for p in sorted(TESTS.rglob("*.py")) for h in unexplained_sleeps(p, TESTS.parent)]
    assert found == [], "\n".join(found)


def test_the_check_sees_a_bare_sleep(tmp_path: Path) -> None:
    path = tmp_path / "t.py"
    path.write_text(
        "import asyncio, time\n"
        "async def f():\n"
        "    time.sleep(1)\n"
        "    time.sleep(0.1)  # sleep-ok: a reason\n"
        "    # sleep-ok: a reason on the line above\n"
        "    await asyncio.sleep(2)\n"
        "    await asyncio.sleep(0)\n"
        "    await asyncio.sleep(0.5)\n"
    )
    assert [hit.split(":")[1] for hit in unexplained_sleeps(path, tmp_path)] == ["3", "8"]
