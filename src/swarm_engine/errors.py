"""The error tree. Every error the product raises on purpose derives from `SwarmError`.

The CLI turns a `SwarmError` into one line on stderr and the process exit status `exit_code`
(documented in docs/cli.md). Library code raises; only the CLI ends the process.
"""

from __future__ import annotations


class SwarmError(Exception):
    """Base of every deliberate error; `exit_code` is what the CLI exits with."""

    exit_code = 1


class UsageError(SwarmError):
    """Bad command-line input: malformed JSON, bad KEY=VALUE, conflicting flags."""

    exit_code = 2


class NotFoundError(SwarmError):
    """A ticket, agent, workflow or run that does not exist."""

    exit_code = 3


class ConflictError(SwarmError):
    """The object exists but is in a state that forbids the action (e.g. already claimed)."""

    exit_code = 4


class ConfigError(SwarmError):
    """Invalid configuration or definition: a malformed agent.yaml or workflow.yaml."""

    exit_code = 5


class AttemptsUsedError(ConfigError):
    """An open ticket whose `attempts` already reached its `max_attempts` (or is negative):
    a row written so by hand, refused rather than run (`engine/plan.attempts_exceeded`)."""


class WorkflowError(ConfigError):
    """A workflow definition that cannot be registered (cycle, unknown step or agent)."""


class StoreError(SwarmError):
    """The ticket or registry database could not do what was asked."""

    exit_code = 6


class StoreUnreachableError(StoreError):
    """The database server did not answer (connection refused, timed out, name not
    found): it may not be up yet. `start` and `serve` wait for it at start-up; any other
    command reports it and exits 6. A server that answers and refuses (a wrong password,
    no such database) is a plain `StoreError`."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"cannot connect to {where}: {reason}")
        self.where = where
        self.reason = reason


class StoreBusyError(StoreError):
    """A transient store failure: the database is locked past the busy timeout, the disk is
    full or an I/O call failed. Callers that must not fail (lease renewal, a running step's
    writes) retry with backoff; a command reports it and exits 6."""


class StoreRolledBackError(StoreBusyError):
    """PostgreSQL rolled back a transaction (or an autocommit statement) to break a
    deadlock or a serialization conflict (SQLSTATE 40P01, 40001). It did nothing, so it
    may run again from its start: the store does, a few times (`store/rerun.py`), before
    it reports it as busy."""


class HostShortageError(StoreBusyError):
    """The engine's host is short of file descriptors, memory or processes for now, where
    a store call would be (resolving a ticket's plan imports its agent kind): waited out
    by every caller that waits out a busy store, and logged as a shortage."""


class StoreGoneError(StoreError):
    """A SQLite database's name no longer names the file this process opened: it was
    deleted, or another file was put in its place (`mv` over it). Nothing more is read or
    written through that connection (SQLite pairs a database with its `-wal` and `-shm`
    files by name, so writes would mix with the new file's). Final: an engine stops."""


class StoreIntegrityError(StoreError):
    """A write refused by a constraint (CHECK, NOT NULL, UNIQUE, FOREIGN KEY)."""


class EngineRowLostError(StoreIntegrityError):
    """The engine's own `engines` row was deleted by another writer and the store would
    not let it be put back (a trigger that drops or refuses its insert): no write that
    names the engine can be made. Final: the engine stops, and a ticket it claimed but
    could not start is put back in the queue for another engine."""


class StaleAttemptError(StoreError):
    """A write from an attempt that no longer holds the ticket's lease (fencing)."""


class AttemptEndedError(StaleAttemptError):
    """A fenced write of this attempt was refused because another writer deleted its
    ticket or changed the attempt's rows (a trigger inside the engine's own write, whose
    change was undone with it, included): the engine ended the attempt at once, failing
    a ticket it still held with the reason, and logged it (one line)."""


class TicketDeletedError(AttemptEndedError):
    """The ticket of a running attempt was deleted by another writer."""


class VMError(SwarmError):
    """A VM backend could not boot, run in, or destroy a VM."""

    exit_code = 7


class VMTimeoutError(VMError):
    """A command in a VM ran past its wall-clock timeout and was killed."""


class AgentError(SwarmError):
    """An agent failed in a way that fails its step (bad inputs, API failure, budget)."""

    exit_code = 8


class InputsInvalidError(AgentError):
    """A step's inputs do not match its agent's `inputs` JSON Schema (jsonschema's message)."""


class SchemaCheckError(AgentError):
    """A step's inputs could not be checked against its agent's schema: not within the
    time or memory one check may take (`swarm_engine.schema_check`), or the process that
    checks could not start. The inputs are refused (fail closed)."""


class TicketFailed(SwarmError):
    """`run-ticket --wait` finished and the ticket ended failed or cancelled."""

    exit_code = 1
