"""A trigger's switches (`webhook`, `sub_minute`) are JSON/YAML booleans only: `"yes"`,
`"true"` or `1` in a workflow.yaml, a POST body or a registry row is refused with one
line naming the field, never read as true (a per-second schedule was let through by
`sub_minute: "yes"`)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from swarm_engine.models import TriggerSpec, first_error


@pytest.mark.parametrize("field", ["webhook", "sub_minute"])
@pytest.mark.parametrize("value", ["yes", "true", 1, 0, "false", None])
def test_a_switch_that_is_no_boolean_is_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        TriggerSpec.model_validate({"name": "t", "cron": "* * * * *", field: value})
    assert first_error(refused.value).startswith(f"{field}: Input should be a valid boolean")


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_switch_is_taken(value: bool) -> None:
    spec = TriggerSpec.model_validate({"name": "t", "cron": "* * * * *", "sub_minute": value})
    assert spec.sub_minute is value
