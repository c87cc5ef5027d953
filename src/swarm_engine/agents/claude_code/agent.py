"""The `claude-code` agent kind: Claude Code runs headless in the step's VM.

`claude -p` gets the ticket as its prompt (on stdin), the agent's settings as flags
(`--model`, `--max-turns`, `--allowedTools`, `--permission-mode`, system prompts) and
`--output-format stream-json`; it talks to the model API only through the step's gateway
(`ANTHROPIC_BASE_URL`, and the step's token as `ANTHROPIC_API_KEY`: never the key), with
telemetry, error reports, updates and other non-essential traffic off. Its home and
settings live in `.swarm/claude-code` of the workspace.

Outputs: `result` (its final answer), `subtype`, `num_turns`, `session_id`, `changes`
(workspace files added, modified, deleted), `files` (declared `output_files`),
`claude_code_usage` (what it reports) and `usage_check` (that against what the gateway
counted; the step's recorded usage is the gateway's). Artifacts: `transcript.jsonl`, the
changed files under `workspace/`, and the gateway's `model_api.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from swarm_engine.agents.base import (
    LogCallback,
    ModelApiNeeds,
    StepContext,
    StepOutcome,
)
from swarm_engine.agents.claude.redact import Redactor
from swarm_engine.agents.claude.usage import count as _count
from swarm_engine.agents.claude_code import install
from swarm_engine.agents.claude_code.changes import compare, copy_changed, snapshot
from swarm_engine.agents.claude_code.settings import (
    ClaudeCodeConfig,
    HostSettings,
    parse_config,
    parse_host_settings,
)
from swarm_engine.agents.claude_code.transcript import TRANSCRIPT_NAME, StreamTranscript
from swarm_engine.agents.files import put_inputs, tail, upload_package
from swarm_engine.agents.prompt import task_prompt
from swarm_engine.agents.shell import check_exec_size
from swarm_engine.errors import AgentError, SwarmError, VMError
from swarm_engine.models import AgentSpec, Usage
from swarm_engine.vm.base import VM, ExecResult, output_file_path

log = logging.getLogger(__name__)

GUEST_DIR = "/opt/claude-code"
"""Where the VM shows the installed release, read-only: the process sandbox binds the
folder; a microVM mounts a squashfs image of it from a read-only drive (vm/qemu/mounts.py)."""
QUIET_ENV = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_BUG_COMMAND": "1",
    "DISABLE_NON_ESSENTIAL_MODEL_CALLS": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "IS_SANDBOX": "1",
}
"""Nothing but the model API calls it needs; and it may skip permission checks as root
(the qemu guest), since the VM is the boundary."""
LAUNCH = (
    'HOME="$SWARM_WORKSPACE/.swarm/claude-code"; CLAUDE_CONFIG_DIR="$HOME"; '
    'export HOME CLAUDE_CONFIG_DIR; mkdir -p "$HOME" && exec "$0" "$@"'
)
STOP_REASONS = {
    "error_max_turns": "max_turns",
    "error_max_budget_usd": "budget_exceeded",
    "error_during_execution": "error",
}
USAGE_KEYS = {
    "input_tokens": "inputTokens",
    "output_tokens": "outputTokens",
    "cache_creation_input_tokens": "cacheCreationInputTokens",
    "cache_read_input_tokens": "cacheReadInputTokens",
}


class ClaudeCodeAgent:
    kind = "claude-code"

    def __init__(self, host_config: Mapping[str, Any] | None = None) -> None:
        self._host_raw = dict(host_config or {})
        self._host: HostSettings | None = None

    def host(self) -> HostSettings:
        if self._host is None:
            self._host = parse_host_settings(self._host_raw)
        return self._host

    # -- before the VM ---------------------------------------------------------------------
    def preflight(self, agent: AgentSpec) -> None:
        parse_config(agent.config, agent.name)
        host = self.host()
        if install.installed(host.cache_dir, host.version) is None:
            install.check_installable(
                host.cache_dir, host.version, npm=host.npm, allow=host.install
            )

    def model_api(self, agent: AgentSpec) -> ModelApiNeeds:
        config = parse_config(agent.config, agent.name)
        return ModelApiNeeds(
            max_tokens=config.budget.max_tokens,
            max_usd=config.budget.max_usd,
            prices=config.prices,
            model=config.model,
        )

    async def prepare(
        self, agent: AgentSpec, log: LogCallback | None
    ) -> tuple[tuple[str, str], ...]:
        """Install the host's release of Claude Code if it is missing (and allowed), and
        show it read-only at `GUEST_DIR` in the VM."""
        host = self.host()
        if install.installed(host.cache_dir, host.version) is None and log is not None:
            await _log(log, f"installing Claude Code {host.version} into {host.cache_dir}")
        folder = await asyncio.to_thread(
            install.ensure, host.cache_dir, host.version, npm=host.npm, allow=host.install
        )
        return ((str(folder), GUEST_DIR),)

    # -- in the VM -------------------------------------------------------------------------
    async def run(self, ctx: StepContext) -> StepOutcome:
        try:
            config = parse_config(ctx.agent.config, ctx.agent.name)
            if ctx.model_api is None:
                raise AgentError("claude-code runs only with the engine's model API gateway")
            binary = await self._binary(ctx.vm)
        except SwarmError as exc:
            return StepOutcome(exit_code=1, error=str(exc), usage=Usage(stop_reason="error"))
        return await _Run(ctx, config, binary).go()

    async def _binary(self, vm: VM) -> str:
        """The program as the VM sees it: the mounted release (process sandbox, microVM),
        the host's path (no isolation: the host's files are visible), else `claude` on the
        VM's PATH (an image that has it)."""
        host = self.host()
        folder = install.installed(host.cache_dir, host.version)
        candidates = [f"{GUEST_DIR}/{install.BINARY}"]
        if folder is not None:
            candidates.append(str(folder / install.BINARY))
        for path in candidates:
            probe = await vm.exec(["test", "-x", path], timeout=30)
            if probe.ok:
                return path
        found = await vm.exec(["sh", "-c", "command -v claude"], timeout=30)
        if found.ok and found.stdout.strip():
            return found.stdout.decode().strip()
        raise AgentError(
            f"Claude Code is not available in this VM ({vm.info().isolation or 'unknown'}): "
            f"the host's installed release is not at {GUEST_DIR} and no `claude` is on the "
            "VM's PATH (docs/agents.md)"
        )


class _Run:
    """One Claude Code step."""

    def __init__(self, ctx: StepContext, config: ClaudeCodeConfig, binary: str) -> None:
        assert ctx.model_api is not None
        self.ctx = ctx
        self.config = config
        self.binary = binary
        self.api = ctx.model_api
        self.redactor = Redactor(list(ctx.model_api.env.values()))

    def argv(self) -> list[str]:
        cfg = self.config
        args = ["-p", "--output-format", "stream-json", "--verbose", "--model", cfg.model,
                "--max-turns", str(cfg.max_turns), "--permission-mode", cfg.permissions,
                "--no-session-persistence"]  # fmt: skip
        if cfg.allowed_tools is not None:
            args.append("--allowedTools=" + ",".join(cfg.allowed_tools))
        if cfg.disallowed_tools:
            args.append("--disallowedTools=" + ",".join(cfg.disallowed_tools))
        if cfg.system_prompt is not None:
            args += ["--system-prompt", cfg.system_prompt]
        if cfg.append_system_prompt is not None:
            args += ["--append-system-prompt", cfg.append_system_prompt]
        return ["sh", "-c", LAUNCH, self.binary, *args]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in self.ctx.agent.env.items() if not k.startswith("ANTHROPIC_")}
        env.update(QUIET_ENV)
        env.update(self.api.env)
        return env

    async def go(self) -> StepOutcome:
        ctx = self.ctx
        vm = ctx.vm
        argv = self.argv()
        try:
            for arg in argv:
                check_exec_size("a claude-code setting", arg, "shorten it in agent.yaml")
            await upload_package(
                vm, ctx.agent, ctx.packages_dir, timeout=ctx.timeout_seconds, held=ctx.package
            )
            await put_inputs(vm, ctx.inputs, ctx.inputs_json)
            before = await snapshot(vm)
        except (SwarmError, OSError) as exc:
            return StepOutcome(exit_code=1, error=str(exc), usage=self._usage("error"))
        prompt = task_prompt(ctx.ticket, ctx.inputs, ctx.agent.output_files)
        transcript = StreamTranscript(Path(ctx.artifacts_dir) / TRANSCRIPT_NAME, self.redactor)

        answered = asyncio.Event()

        async def on_output(stream: str, chunk: bytes) -> None:
            if stream == "stdout":
                for line in transcript.feed(chunk):
                    await self._say(line)
                if transcript.result is not None:
                    answered.set()
            elif ctx.log is not None:
                await _log(ctx.log, self.redactor.text(chunk.decode(errors="replace")), "stderr")

        job = asyncio.ensure_future(
            vm.exec(
                argv,
                env=self.env(),
                stdin=prompt.encode(),
                timeout=ctx.timeout_seconds,
                on_output=on_output,
            )
        )
        try:
            done = await _until_exit_or_past_result(job, answered)
        finally:
            if not job.done():  # (this step cancelled: its command's tree is killed)
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
            for line in transcript.close():
                await self._say(line)
        if done is None:
            await self._say(
                f"claude printed its result but had not exited {RESULT_GRACE:g}s later"
                " (a background task it left, still running): stopped"
            )
            done = ExecResult(exit_code=0, stdout=b"", stderr=b"", duration_ms=0)
        result = transcript.result or {}
        outputs: dict[str, Any] = {
            "result": result.get("result") if isinstance(result.get("result"), str) else "",
            "subtype": result.get("subtype"),
            "num_turns": result.get("num_turns"),
            "session_id": result.get("session_id"),
        }
        error: str | None = None
        if done.timed_out:
            error = f"timed out after {ctx.timeout_seconds:g}s; process tree killed"
        elif not result:
            detail = tail(done.stderr) or tail(done.stdout)
            error = f"claude exited with {done.exit_code} without a result" + (
                f": {detail}" if detail else ""
            )
        elif result.get("is_error") or done.exit_code != 0:
            what = result.get("result") or result.get("subtype") or "error"
            error = f"claude ended with an error ({result.get('subtype')}): {_short(str(what))}"
        after = await snapshot(vm)
        if before is not None and after is not None:
            changes = compare(before, after)
            outputs["changes"] = changes.as_outputs()
            skipped = await copy_changed(vm, changes, Path(ctx.artifacts_dir) / "workspace")
            if skipped:
                outputs["changes"]["not_copied"] = skipped[:50]
        files, missing = await self._output_files()
        if files:
            outputs["files"] = files
        if missing and error is None:
            error = f"declared output file {missing!r} was not written"
        reported = _reported_usage(result)
        if reported is not None:
            outputs["claude_code_usage"] = reported
            outputs["usage_check"] = await self._check(reported)
        stop = result.get("stop_reason") if result.get("subtype") == "success" else None
        reason = STOP_REASONS.get(str(result.get("subtype")), "error" if error else None)
        if done.timed_out:
            reason = "timeout"
        return StepOutcome(
            outputs=self.redactor.data(outputs),
            exit_code=done.exit_code,
            error=None if error is None else self.redactor.text(error),
            usage=self._usage(stop if isinstance(stop, str) and error is None else reason),
        )

    async def _output_files(self) -> tuple[dict[str, str], str | None]:
        files: dict[str, str] = {}
        for declared in self.ctx.agent.output_files:
            try:
                data = await self.ctx.vm.get_file(output_file_path(declared))
            except VMError:
                return files, declared
            files[declared] = data.decode("utf-8", "replace")
        return files, None

    async def _check(self, reported: dict[str, int]) -> dict[str, Any]:
        counted = self.api.usage()
        gateway = {k: getattr(counted, k) for k in USAGE_KEYS}
        agree = gateway == reported
        if not agree:
            await self._say(
                f"usage check: the gateway counted {gateway}, Claude Code reports {reported}"
            )
        return {"gateway": gateway, "agree": agree}

    def _usage(self, stop_reason: str | None) -> Usage:
        used = self.api.usage()
        used.stop_reason = stop_reason
        return used

    async def _say(self, text: str) -> None:
        text = self.redactor.text(text)
        log.info("%s", text, extra={"run_id": self.ctx.run_id, "step_id": self.ctx.step_id})
        if self.ctx.log is not None:
            await _log(self.ctx.log, text)


RESULT_GRACE = 10.0
"""Seconds Claude Code has to exit once it printed its `result`: past them it is stopped
and its result stands. It waits for the background tasks it started (a dev server, a
command it moved to the background past its own 2 minutes), which held the VM to the
step's timeout and failed a step that had succeeded."""


async def _until_exit_or_past_result(
    job: asyncio.Future[ExecResult], answered: asyncio.Event
) -> ExecResult | None:
    """The command's result when it exits; None when it printed its result and had not
    exited `RESULT_GRACE` seconds later (it is then stopped: its process tree killed)."""
    said = asyncio.ensure_future(answered.wait())
    either: set[asyncio.Future[Any]] = {job, said}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        said.cancel()
    if not job.done():
        try:
            return await asyncio.wait_for(asyncio.shield(job), RESULT_GRACE)
        except TimeoutError:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
            return None
    return job.result()


async def _log(log_to: LogCallback, text: str, stream: str = "agent") -> None:
    maybe = log_to(stream, text if text.endswith("\n") else text + "\n")
    if inspect.isawaitable(maybe):
        await maybe


def _reported_usage(result: Mapping[str, Any]) -> dict[str, int] | None:
    """What Claude Code says it used: the sum over its models (`modelUsage`), else `usage`."""
    per_model = result.get("modelUsage")
    if isinstance(per_model, dict) and per_model:
        totals = dict.fromkeys(USAGE_KEYS, 0)
        for entry in per_model.values():
            if isinstance(entry, dict):
                for ours, theirs in USAGE_KEYS.items():
                    totals[ours] += _count(entry.get(theirs))
        return totals
    usage = result.get("usage")
    if isinstance(usage, dict):
        return {k: _count(usage.get(k)) for k in USAGE_KEYS}
    return None


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
