"""Any version a registry row holds orders and compares (never converted to an int of
unbounded digits); a row whose version cannot be one is never the latest."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm_engine.errors import ConfigError
from swarm_engine.registry import Registry
from swarm_engine.registry.versions import latest_key, version_key

HUGE = "9" * 5000  # more digits than Python converts to an int (4,300)


# -- versions ---------------------------------------------------------------------------
@given(
    st.lists(st.integers(0, 10**30), min_size=1, max_size=4),
    st.lists(st.integers(0, 10**30), min_size=1, max_size=4),
    st.integers(0, 3),
)
def test_numeric_versions_order_as_numbers(a: list[int], b: list[int], zeros: int) -> None:
    left = ".".join("0" * zeros + str(n) for n in a)  # leading zeros do not count
    right = ".".join(str(n) for n in b)
    assert (version_key(left) < version_key(right)) == (a < b)
    assert (version_key(left) == version_key(right)) == (a == b)


@given(st.one_of(st.text(), st.just(HUGE), st.just(f"1.{HUGE}.0")), st.text())
def test_any_stored_version_has_a_key_that_compares(a: str, b: str) -> None:
    keys = sorted([version_key(a), version_key(b), version_key("1.0.0")])
    assert len(keys) == 3
    assert version_key(f"1.{HUGE}") > version_key("1.9") > version_key("1.1")


def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry.db", tmp_path / "packages")


def add_rows(tmp_path: Path, rows: list[tuple[str, str, str]]) -> None:
    """(table, version, name) rows as any SQLite client writes them."""
    conn = sqlite3.connect(tmp_path / "registry.db", isolation_level=None)
    for table, name, version in rows:
        spec: dict[str, Any] = {"name": name, "version": version}
        if table == "workflows":
            spec["steps"] = [{"id": "s", "agent": "echo"}]
            conn.execute(
                "INSERT INTO workflows (name, version, spec) VALUES (?, ?, ?)",
                (name, version, json.dumps(spec)),
            )
        else:
            conn.execute(
                "INSERT INTO agents (name, version, kind, spec) VALUES (?, ?, 'echo', ?)",
                (name, version, json.dumps({**spec, "kind": "echo"})),
            )
    conn.close()


def test_a_row_whose_version_cannot_be_one_is_the_latest_only_when_alone(
    tmp_path: Path,
) -> None:
    reg = registry(tmp_path)
    try:
        add_rows(
            tmp_path,
            [
                ("workflows", "vk", "1.0.0"),
                ("workflows", "vk", HUGE),
                ("agents", "vka", "1.0.0"),
                ("agents", "vka", HUGE),
                ("agents", "vka", "2.0.0\x00"),
                ("workflows", "only", HUGE),
                ("agents", "lone", HUGE),
            ],
        )
        assert reg.workflow("vk").version == "1.0.0"
        assert reg.agent("vka").version == "1.0.0"
        reg.require_agent("vka")
        assert [w.ref for w, _ in reg.latest_workflows()] == ["vk@1.0.0"]
        # named outright, or the only rows of their name: refused in one short line
        for get, ref in (
            (reg.workflow, f"vk@{HUGE}"),
            (reg.agent, f"vka@{HUGE}"),
            (reg.workflow, "only"),
            (reg.agent, "lone"),
            (reg.require_agent, "lone"),
        ):
            with pytest.raises(ConfigError) as caught:
                get(ref)
            message = str(caught.value)  # (a version over 1 KiB is not read at all)
            assert (
                "@? in the registry: version is 5,000 bytes of text, more than the 1 KiB" in message
            ), message
            assert len(message) < 200 and "\n" not in message, message
    finally:
        reg.close()


def test_latest_workflows_sees_each_rows_change_between_reads(tmp_path: Path) -> None:
    """A daemon reads the latest workflows every 10 s and decodes a row only when it
    changed: a row rewritten in place (same name, version and time), broken, mended or
    deleted by any SQLite client is seen as it is at each read."""
    reg = registry(tmp_path)
    try:
        add_rows(tmp_path, [("workflows", "a", "1.0.0"), ("workflows", "b", "1.0.0")])
        first = reg.latest_workflows()
        assert sorted(w.ref for w, _ in first) == ["a@1.0.0", "b@1.0.0"]
        assert [w.steps[0].agent for w, _ in first] == ["echo", "echo"]
        conn = sqlite3.connect(tmp_path / "registry.db", isolation_level=None)
        good = json.dumps({"name": "a", "version": "1.0.0",
                           "steps": [{"id": "s", "agent": "shell", "inputs": {"command": "true"}}]})  # fmt: skip
        conn.execute("UPDATE workflows SET spec = ? WHERE name = 'a'", (good,))
        conn.execute("UPDATE workflows SET spec = '{\"name\": \"b\", \"version\": \"1.0.0\"}'"
                     " WHERE name = 'b'")  # fmt: skip
        skipped: list[str] = []
        second = {w.ref: w for w, _ in reg.latest_workflows(skipped)}
        assert list(second) == ["a@1.0.0"] and second["a@1.0.0"].steps[0].agent == "shell"
        assert len(skipped) == 1 and skipped[0].startswith("workflow b@1.0.0 in the registry: ")
        conn.execute("UPDATE workflows SET spec = ? WHERE name = 'b'",
                     (good.replace('"a"', '"b"'),))  # fmt: skip
        conn.execute("DELETE FROM workflows WHERE name = 'a'")
        conn.close()
        skipped = []
        third = reg.latest_workflows(skipped)
        assert [w.ref for w, _ in third] == ["b@1.0.0"] and skipped == []
        assert third[0][0].steps[0].agent == "shell"
    finally:
        reg.close()


# -- SemVer precedence --------------------------------------------------------------------
SEMVER_EXAMPLES = [  # semver.org, section 11, in ascending order, and more of the same
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.10-rc1",
    "1.0.10",
    "2.0.0-rc1",
    "2.0.0",
    "2.0.0+build9",  # build metadata: no part of precedence, only a tie-break
    "2.0.0+build9.1",
    "2.1.0-0",
    "2.1.0-1.x-y",
    "2.1.0-x",
]


def test_versions_order_by_semver_precedence() -> None:
    assert sorted(SEMVER_EXAMPLES, key=version_key) == SEMVER_EXAMPLES
    assert sorted(reversed(SEMVER_EXAMPLES), key=latest_key) == SEMVER_EXAMPLES


IDENT = st.one_of(
    st.integers(0, 10**25).map(str),
    st.text("0123456789abcXYZ-", min_size=1, max_size=4),
)
SEMVER = st.builds(
    lambda core, pre, build: (
        ".".join(core)
        + (f"-{'.'.join(pre)}" if pre else "")
        + (f"+{'.'.join(build)}" if build else "")
    ),
    st.lists(st.integers(0, 10**25).map(str), min_size=3, max_size=3),
    st.lists(IDENT, max_size=3),
    st.lists(IDENT, max_size=2),
)


@given(st.lists(st.one_of(SEMVER, st.text(max_size=12), st.sampled_from(SEMVER_EXAMPLES)),
                min_size=3, max_size=3))  # fmt: skip
def test_latest_key_is_a_total_order(versions: list[str]) -> None:
    a, b, _ = versions
    ka, kb, kc = (latest_key(v) for v in versions)
    assert (ka == kb) == (a == b)  # two distinct rows never tie
    assert (ka < kb) != (kb < ka) or a == b  # antisymmetric
    if ka <= kb and kb <= kc:
        assert ka <= kc  # transitive


def _semver_cmp(a: str, b: str) -> int:
    """SemVer precedence straight from the spec's words, for checking (-1, 0, 1)."""

    def cmp(x: Any, y: Any) -> int:
        return int(x > y) - int(x < y)

    (ca, _, pa), (cb, _, pb) = (v.split("+")[0].partition("-") for v in (a, b))
    if d := cmp([int(n) for n in ca.split(".")], [int(n) for n in cb.split(".")]):
        return d
    if not pa or not pb:
        return cmp(not pa, not pb)  # a pre-release ranks below its release
    for x, y in zip(pa.split("."), pb.split("."), strict=False):
        if x.isdigit() and y.isdigit():
            d = cmp(int(x), int(y))
        elif x.isdigit() or y.isdigit():
            d = -1 if x.isdigit() else 1  # numeric < alphanumeric
        else:
            d = cmp(x, y)
        if d:
            return d
    return cmp(len(pa.split(".")), len(pb.split(".")))


@given(SEMVER, SEMVER)
def test_version_key_matches_semver_precedence(a: str, b: str) -> None:
    expected = _semver_cmp(a, b)
    ka, kb = version_key(a), version_key(b)
    if expected:
        assert (ka < kb) == (expected < 0) and ka != kb
    else:  # equal precedence: only build metadata (or leading zeros) differ
        assert (ka[0], ka[1]) == (kb[0], kb[1])


def test_the_latest_workflow_is_the_release_not_its_pre_release(tmp_path: Path) -> None:
    """Cron triggers fire each workflow's latest version: SemVer precedence there too."""
    reg = registry(tmp_path)
    try:
        add_rows(
            tmp_path,
            [
                ("workflows", "wf", "1.0.10"),
                ("workflows", "wf", "2.0.0"),
                ("workflows", "wf", "2.0.0-rc1"),
                ("workflows", "wf", "1.9.0"),
            ],
        )
        assert reg.workflow("wf").version == "2.0.0"
        assert [w.ref for w, _ in reg.latest_workflows()] == ["wf@2.0.0"]
    finally:
        reg.close()


def test_a_row_that_fails_validation_gives_no_triggers_and_owns_no_name(tmp_path: Path) -> None:
    """A row another client wrote that decodes but fails `workflow()`'s checks (here a
    dependency cycle) is left out of `latest_workflows` when it declares triggers, with
    the line `workflow()` refuses it with; its trigger's name is nobody's, so another
    workflow registers it. A row without triggers is not checked there (nothing fires)."""
    from swarm_engine.models import WorkflowSpec

    reg = registry(tmp_path)
    try:
        steps = [{"id": "a", "agent": "echo", "needs": ["b"]},
                 {"id": "b", "agent": "echo", "needs": ["a"]}]  # fmt: skip
        conn = sqlite3.connect(tmp_path / "registry.db", isolation_level=None)
        for name, triggers in (("looped", [{"name": "hook", "webhook": True}]), ("quiet", [])):
            spec = {"name": name, "version": "1.0.0", "steps": steps, "triggers": triggers}
            conn.execute("INSERT INTO workflows (name, version, spec) VALUES (?, '1.0.0', ?)",
                         (name, json.dumps(spec)))  # fmt: skip
        conn.close()
        with pytest.raises(ConfigError) as refused:
            reg.workflow("looped")
        skipped: list[str] = []
        assert [w.ref for w, _ in reg.latest_workflows(skipped)] == ["quiet@1.0.0"]
        assert skipped == [str(refused.value)]
        assert "dependency cycle: a -> b -> a" in skipped[0]
        valid = WorkflowSpec.model_validate({
            "name": "valid", "version": "1.0.0", "steps": [{"id": "s", "agent": "echo"}],
            "triggers": [{"name": "hook", "webhook": True}],
        })  # fmt: skip
        reg.register_workflows([(valid, "valid.yaml")])
        assert [w.ref for w, _ in reg.latest_workflows()] == ["quiet@1.0.0", "valid@1.0.0"]
    finally:
        reg.close()
