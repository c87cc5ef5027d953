"""The ticket store is a public interface: every column of every table is documented."""

from __future__ import annotations

import re
from pathlib import Path

from swarm_engine.store import open_store

DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"


def test_every_column_is_documented(tmp_path: Path) -> None:
    store = open_store(tmp_path / "t.db")
    text = DOC.read_text()
    documented = set(re.findall(r"`([a-z_]+)`", text))
    tables = [
        r[0]
        for r in store.db.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    missing = [
        f"{table}.{col[1]}"
        for table in tables
        for col in store.db.conn.execute(f"PRAGMA table_info({table})")
        if col[1] not in documented
    ]
    assert tables and missing == []
    store.close()
