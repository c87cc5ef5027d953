"""How versions rank: SemVer 2.0 precedence for any text a registry row may hold, and
"the latest" of a name's rows (`latest_key`)."""

from __future__ import annotations

from typing import Any

from swarm_engine.records import VERSION_RE
from swarm_engine.store.db import InvalidText


def _identifiers(text: str) -> tuple[tuple[int, int, str], ...]:
    """Dot-separated identifiers as SemVer compares them: a numeric one below any other,
    numbers by value (by their digits, leading zeros dropped: never converted to an int),
    others as ASCII text; with every earlier one equal, more identifiers rank higher."""
    key: list[tuple[int, int, str]] = []
    for part in text.split("."):
        if part.isascii() and part.isdigit():
            digits = part.lstrip("0")
            key.append((0, len(digits), digits))
        else:
            key.append((1, 0, part))
    return tuple(key)


def version_key(version: str) -> tuple[Any, ...]:
    """SemVer 2.0 precedence, extended to any text a row may hold: `1.0.0-rc.1` < `1.0.0`
    < `1.0.10` < `2.0.0-alpha` < `2.0.0-alpha.1` < `2.0.0-beta.11` < `2.0.0`.

    The text is split at its first `+` (build metadata after it) and what is before at
    its first `-` (a pre-release after it). The core's dot-separated parts and then the
    pre-release's are compared as identifiers (`_identifiers`); a version with a
    pre-release ranks below the same core without one. Build metadata is no part of
    precedence: it only breaks a tie, as node-semver's `compareBuild` does: the version
    without build metadata first, then build identifiers compared like a pre-release's
    (`2.0.0` < `2.0.0+build9` < `2.0.0+build9.1`). `latest_key` breaks what is left (only
    leading zeros differ: `01.0.0`, `1.0.0`) by the text itself.

    A number is compared by its digits, never converted to an int: a stored version is
    untrusted and may hold more digits than Python converts (4,300). Any text gives a key,
    and keys always compare."""
    rest, plus, build = version.partition("+")
    core, dash, pre = rest.partition("-")
    pre_key: tuple[Any, ...] = (0, _identifiers(pre)) if dash else (1,)
    build_key: tuple[Any, ...] = (1, _identifiers(build)) if plus else (0,)
    return (_identifiers(core), pre_key, build_key)


def latest_key(version: str) -> tuple[bool, tuple[Any, ...], str]:
    """How a row's `version` column ranks for "the latest": a version that can be one
    (`VERSION_RE`) above any that cannot (such a row would only fail to decode), then
    `version_key`, then the text itself (two rows never tie: the latest does not depend on
    the order rows are read in). A name whose rows all hold bad versions still resolves, to a row that
    fails with one line naming it."""
    valid = not isinstance(version, InvalidText) and VERSION_RE.fullmatch(version) is not None
    return valid, version_key(version), version
