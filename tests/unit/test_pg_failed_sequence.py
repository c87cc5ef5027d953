"""Inside a caller's transaction, only the id table whose sequence the failed `nextval`
names is repaired (each repair locks its table until the commit; locking every id table
deadlocked with another engine's transaction); a message naming none of ours, or several,
repairs them all."""

from __future__ import annotations

from swarm_engine.store.pgsequences import ID_TABLES, failed_tables


def test_the_sequence_a_nextval_names_is_the_one_repaired() -> None:
    for table in ID_TABLES:
        said = Exception(f'nextval: reached maximum value of sequence "{table}_id_seq" (9)')
        assert failed_tables(said) == (table,)


def test_a_message_naming_no_sequence_of_ours_repairs_every_one() -> None:
    assert failed_tables(Exception('reached maximum value of sequence "other_seq"')) == ID_TABLES
    assert failed_tables(Exception("")) == ID_TABLES
