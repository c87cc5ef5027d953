"""Names, versions, step ids and image names hold no control character: a pattern that
ended in `$` also matched before a last newline, so `"echo\\n"` was a name and `"1.0.0\\n"`
a version that ranked above `1.0.0`. Every definition model, the quick check of stored
rows (registry/plain.py) and the ranking of versions refuse them, wherever the character
stands."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from swarm_engine.models import (
    IMAGE_RE,
    NAME_RE,
    VERSION_RE,
    AgentSpec,
    StepSpec,
    TriggerSpec,
    VMRequirements,
    WorkflowSpec,
)
from swarm_engine.registry.plain import plain_agent
from swarm_engine.registry.versions import latest_key

CONTROL = st.one_of(
    st.just("\n"),  # what `$` let through at the end
    st.sampled_from([chr(c) for c in range(0x20)] + ["\x7f", "\x85", "\u2028", "\u2029", "\r\n"]),
)
GOOD_NAMES = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,40}", fullmatch=True)
GOOD_VERSIONS = st.from_regex(r"[0-9A-Za-z][0-9A-Za-z.+-]{0,20}", fullmatch=True)


@st.composite
def with_control(draw: st.DrawFn, good: st.SearchStrategy[str]) -> str:
    """A valid value with a control character put anywhere in it (at the end, often)."""
    text = draw(good)
    where = draw(st.one_of(st.just(len(text)), st.integers(0, len(text))))
    return text[:where] + draw(CONTROL) + text[where:]


@given(with_control(GOOD_NAMES))
@example("echo\n")
def test_a_name_with_a_control_character_is_refused_everywhere(name: str) -> None:
    assert NAME_RE.match(name) is None and NAME_RE.fullmatch(name) is None
    with pytest.raises(ValidationError):
        AgentSpec(name=name, kind="echo")
    with pytest.raises(ValidationError):
        WorkflowSpec(name=name, steps=[StepSpec(id="a", agent="echo")])
    with pytest.raises(ValidationError):
        TriggerSpec(name=name, webhook=True)
    assert plain_agent(json.dumps({"name": name, "kind": "echo"})) is None


@given(with_control(GOOD_VERSIONS), GOOD_VERSIONS)
@example("1.0.0\n", "1.0.0")
def test_a_version_with_a_control_character_is_refused_and_never_the_latest(
    version: str, other: str
) -> None:
    assert VERSION_RE.match(version) is None and VERSION_RE.fullmatch(version) is None
    with pytest.raises(ValidationError):
        AgentSpec(name="a", version=version, kind="echo")
    with pytest.raises(ValidationError):
        WorkflowSpec(name="w", version=version, steps=[StepSpec(id="a", agent="echo")])
    assert plain_agent(json.dumps({"name": "a", "version": version, "kind": "echo"})) is None
    assert latest_key(other) > latest_key(version)  # a valid version ranks above it


@given(with_control(st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,20}", fullmatch=True)))
@example("main\n")
def test_a_step_id_with_a_control_character_is_refused(step_id: str) -> None:
    with pytest.raises(ValidationError):
        StepSpec(id=step_id, agent="echo")


@given(with_control(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True)))
@example("base\n")
def test_an_image_name_with_a_control_character_is_refused(image: str) -> None:
    assert IMAGE_RE.match(image) is None
    with pytest.raises(ValidationError):
        VMRequirements(image=image)


def test_the_tester_s_values() -> None:
    """`echo\\n` and `1.0.0\\n` (a last newline, which `$` let through)."""
    with pytest.raises(ValidationError, match="name"):
        AgentSpec(name="echo\n", kind="echo")
    with pytest.raises(ValidationError, match="version"):
        AgentSpec(name="echo2", version="1.0.0\n", kind="echo")
    assert max(["1.0.0", "1.0.0\n"], key=latest_key) == "1.0.0"
    assert AgentSpec(name="echo2", version="1.0.0", kind="echo").ref == "echo2@1.0.0"
