"""What a trigger's cron schedule may be (`models.TriggerSpec.cron`), and one line saying
why not: the field and value at fault (`'61 * * * *' is not a cron schedule: minute 61 is
out of range (0-59)`), not only that the text is no schedule (croniter's own errors name
no field).

Five fields (minute hour day month weekday) or six (seconds last), UTC. The rule is
checked wherever a workflow is decoded: at registration (`workflow register`,
`POST /v1/workflows`) and by the engine's cron task for a row another client wrote (its
workflow's triggers are skipped, with one warning line).

A schedule fires at most once a minute unless its trigger says `sub_minute: true`: a
sixth (seconds) field names one second (`30`), not several (`*/10`, `0-59`), for each
firing makes a ticket (`0-59 0-23 1-31 1-12 0-6 0-59` made 86,400 a day). That rule is
`registry.workflows.check_workflow`'s, which `per_minute` serves: checked at registration
and on every read of a stored workflow (the cron task's too)."""

from __future__ import annotations

from datetime import UTC, datetime

from swarm_engine.records import shown

FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("weekday", 0, 7),
    ("second", 0, 59),
)
"""Each field's name and range, in order (weekday 0 and 7 are both Sunday)."""
NAMES = {
    "month": {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"},
    "weekday": {"sun", "mon", "tue", "wed", "thu", "fri", "sat"},
}
EXTENDED = {"day": ("l", "w"), "weekday": ("l", "#")}
"""croniter's marks beyond plain numbers (`L` last, `1#2` the second Monday, ...): a token
holding one is left to croniter to judge."""
SCHEDULE = "minute hour day month weekday, and optionally a second"


def cron_problem(cron: str) -> str | None:
    """Why `cron` is not a schedule a trigger may have, one line (the value cut by
    `records.shown`), or None: a wrong number of fields, a field that croniter refuses
    (the field and value named when they can be), a schedule that never matches a time
    (`0 0 31 2 *`)."""
    from croniter import croniter

    fields = cron.split()
    if len(fields) not in (5, 6):
        return (
            f"{shown(cron)} is not a cron schedule: {len(fields)} fields, not 5 or 6 ({SCHEDULE})"
        )
    if not croniter.is_valid(cron):
        return f"{shown(cron)} is not a cron schedule: " + (
            bad_field(fields) or f"croniter refuses it ({SCHEDULE})"
        )
    try:  # a valid-looking schedule may never match (`0 0 31 2 *`: 31 February)
        croniter(cron, datetime.now(UTC)).get_next(datetime)
    except (ValueError, KeyError, ArithmeticError):
        return f"{shown(cron)} never matches a time"
    return None


def bad_field(fields: list[str]) -> str | None:
    """The first fault found in `fields` (5 or 6 of them), said of its field, or None."""
    for text, (name, low, high) in zip(fields, FIELDS, strict=False):
        for item in text.split(","):
            problem = _bad_item(item, name, low, high)
            if problem is not None:
                return problem
    return None


def _bad_item(item: str, name: str, low: int, high: int) -> str | None:
    base, slash, step = item.partition("/")
    if slash:
        if not (step.isascii() and step.isdigit()):
            return f"{name} step {shown(step, 20)} is not a number"
        if int(step[:6]) == 0:
            return f"{name} step 0 in {shown(item, 40)}: a step is 1 or more"
    if base in ("*", "?"):
        return None
    if any(mark in base.lower() for mark in EXTENDED.get(name, ())):
        return None  # croniter's extended syntax: croniter says
    bounds = base.split("-", 1)
    for bound in bounds:
        if bound.lower() in NAMES.get(name, ()):
            continue
        if not (bound.isascii() and bound.isdigit()):
            named = f" nor a {name} name" if name in NAMES else ""
            return f"{name} {shown(bound, 20)} is not a number{named}"
        if len(bound) > 6 or not low <= int(bound) <= high:  # (no int() of 5,000 digits)
            value = bound if len(bound) <= 20 else shown(bound, 20)
            return f"{name} {value} is out of range ({low}-{high})"
    return None


def per_minute(cron: str) -> int:
    """How many times a minute `cron` (a valid schedule) fires at most: 1 for five
    fields, else how many seconds its sixth field names (60 for `*`); 0 for text
    croniter refuses (`cron_problem` says why)."""
    fields = cron.split()
    if len(fields) != 6:
        return 1
    from croniter import croniter

    try:
        seconds = croniter(cron).expanded[5]
    except (ValueError, KeyError, ArithmeticError):
        return 0
    return 60 if seconds == ["*"] else len(seconds)
