"""One Claude step: the tool-use loop, its accounting and its transcript."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import anthropic

from swarm_engine.agents.base import StepContext, StepOutcome
from swarm_engine.agents.claude.api import ApiFailure, create_message, make_client
from swarm_engine.agents.claude.pricing import cost_usd
from swarm_engine.agents.claude.redact import Redactor, one_line_of
from swarm_engine.agents.claude.settings import ClaudeConfig, Price, RetrySettings
from swarm_engine.agents.claude.tools import ToolBox
from swarm_engine.agents.claude.usage import read_usage
from swarm_engine.agents.files import put_inputs, upload_package
from swarm_engine.agents.prompt import task_prompt
from swarm_engine.errors import AgentError, VMError
from swarm_engine.models import Usage
from swarm_engine.vm.base import output_file_path

log = logging.getLogger(__name__)

TRANSCRIPT_NAME = "transcript.json"
FINAL_STOPS = frozenset({"end_turn", "stop_sequence"})


class _Stop(Exception):
    """Ends the loop with a step error; `reason` becomes `Usage.stop_reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Session:
    """Runs the loop for one `StepContext`. Never raises for ordinary failures."""

    def __init__(
        self,
        ctx: StepContext,
        config: ClaudeConfig,
        *,
        api_key: str,
        base_url: str | None,
        price: Price | None,
        retry: RetrySettings,
    ) -> None:
        self.ctx = ctx
        self.config = config
        self.api_key = api_key
        self.base_url = base_url
        self.price = price
        self.retry = retry
        self.redactor = Redactor([api_key])
        self.usage = Usage()
        self.messages: list[dict[str, Any]] = []
        self.sent_bytes = 2
        """The size of `messages` as compact UTF-8 JSON (`[]` to begin with)."""
        self.turns: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.answer = ""

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> StepOutcome:
        error: str | None = None
        outputs: dict[str, Any] = {}
        client = make_client(self.api_key, self.base_url, self.config.request_timeout)
        deadline = time.monotonic() + self.ctx.timeout_seconds
        toolbox = ToolBox(
            self.ctx.vm,
            self.config.tools,
            env=self._vm_env(),
            command_timeout=self.config.tool_timeout,
            max_output=self.config.max_tool_output,
            deadline=deadline,
        )
        try:
            async with asyncio.timeout(self.ctx.timeout_seconds):
                await self._loop(client, toolbox)
                outputs = await self._outputs()
        except _Stop as stop:
            self.usage.stop_reason = stop.reason
            error = str(stop)
        except TimeoutError:
            self.usage.stop_reason = "timeout"
            error = f"step timed out after {self.ctx.timeout_seconds:g}s"
        except AgentError as exc:  # a package that cannot be uploaded: one line
            self.usage.stop_reason = "error"
            error = str(exc)
        except Exception as exc:  # a bug or a dead VM: still report the usage spent
            log.exception("claude step failed unexpectedly")
            self.usage.stop_reason = "error"
            error = f"claude agent failed: {type(exc).__name__}: {exc}"
        finally:
            await client.close()
            if error is not None:
                await self._say(f"failed: {error}")
            self._write_transcript(outputs, error)
        return StepOutcome(
            outputs=self.redactor.data(outputs),
            exit_code=0 if error is None else 1,
            error=None if error is None else self.redactor.text(error),
            usage=self.usage,
        )

    async def _loop(self, client: anthropic.AsyncAnthropic, toolbox: ToolBox) -> None:
        ctx = self.ctx
        await upload_package(
            ctx.vm, ctx.agent, ctx.packages_dir, timeout=ctx.timeout_seconds, held=ctx.package
        )
        await put_inputs(self.ctx.vm, self.ctx.inputs, self.ctx.inputs_json)
        self._add({"role": "user", "content": self.task()}, "the task")
        cfg = self.config
        while True:
            data = await self._request(client, toolbox)
            # A secret the model repeats must not travel on in the history, logs or outputs.
            content: list[dict[str, Any]] = self.redactor.data(data["content"])
            stop = data.get("stop_reason")
            # (kept even past the bound: the transcript keeps what the model said; an
            # answer is bounded by max_tokens, and one the loop goes on from is checked)
            self._add({"role": "assistant", "content": content}, "", held=True)
            tool_uses = [b for b in content if b["type"] == "tool_use"]
            if stop in FINAL_STOPS or (stop is None and not tool_uses):
                self.answer = "".join(b["text"] for b in content if b["type"] == "text").strip()
                self.usage.stop_reason = stop or "end_turn"
                done = f"finished after {self.usage.turns} turns ({self.usage.stop_reason})"
                await self._say(done)
                return
            if stop == "max_tokens":
                raise _Stop("max_tokens", f"the model hit max_tokens ({cfg.max_tokens}) mid-answer")
            if stop == "refusal":
                raise _Stop("refusal", "the model refused the task")
            if stop not in ("tool_use", "pause_turn", None):
                raise _Stop("error", f"unexpected stop_reason {stop!r}")
            self._check_limits()
            turn = self.usage.turns
            self._check_size(self.sent_bytes, f"turn {turn}'s answer")  # before its tools run
            if tool_uses:
                results = [await self._tool(toolbox, block) for block in tool_uses]
                self._add({"role": "user", "content": results}, f"turn {turn}'s tool results")

    def _add(self, message: dict[str, Any], what: str, *, held: bool = False) -> None:
        """Add `message` to the conversation every later request carries, counting its
        bytes as compact UTF-8 JSON. Past `max_transcript_bytes`: `_Stop`, the message
        left out (never cut: the model never sees part of it), unless `held`."""
        size = len(
            json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode(
                "utf-8", "surrogatepass"
            )
        )
        total = self.sent_bytes + size + (1 if self.messages else 0)  # (a comma between)
        if not held:
            self._check_size(total, what)
        self.messages.append(message)
        self.sent_bytes = total

    def _check_size(self, total: int, what: str) -> None:
        """Fail the step (closed) when the next request would carry a conversation of
        `total` bytes, over `max_transcript_bytes`."""
        cap = self.config.max_transcript_bytes
        if total > cap:
            raise _Stop(
                "max_transcript_bytes",
                f"max_transcript_bytes ({cap}) reached: the next request would carry "
                f"{total} bytes of conversation with {what}",
            )

    async def _request(self, client: anthropic.AsyncAnthropic, toolbox: ToolBox) -> dict[str, Any]:
        cfg = self.config
        body: dict[str, Any] = {
            "model": cfg.model,
            "max_tokens": cfg.max_tokens,
            "system": cfg.system_prompt,
            "messages": self.messages,
        }
        if cfg.tools:
            body["tools"] = toolbox.specs()
        if cfg.temperature is not None:
            body["temperature"] = cfg.temperature
        turn = self.usage.turns + 1
        try:
            resp = await create_message(
                client,
                body,
                self.retry,
                request_timeout=cfg.request_timeout,
                on_retry=self._on_retry,
                on_rejected_usage=self._on_rejected_usage,
            )
        except ApiFailure as exc:
            raise _Stop("api_error", str(exc)) from None
        raw = resp.data["usage"]
        used = read_usage(raw).usage  # (checked by create_message: every count is one)
        self._add_usage(used)
        self.turns.append(
            {
                "turn": turn,
                "request_id": resp.request_id,
                "attempts": resp.attempts,
                "stop_reason": resp.data.get("stop_reason"),
                "usage": raw,
            }
        )
        await self._say(
            f"turn {turn}: stop_reason={resp.data.get('stop_reason')} "
            f"in={used.input_tokens} out={used.output_tokens} "
            f"total_cost=${self.usage.cost_usd:.4f}"
        )
        return resp.data

    def _check_limits(self) -> None:
        """Called when the model wants to go on: refuse past max_turns or the budget."""
        cfg, used = self.config, self.usage
        budget = cfg.budget
        if budget.max_tokens is not None and used.total_tokens >= budget.max_tokens:
            raise _Stop(
                "budget_exceeded",
                f"token budget exceeded: {used.total_tokens} of {budget.max_tokens} tokens used",
            )
        if budget.max_usd is not None and used.cost_usd >= budget.max_usd:
            raise _Stop(
                "budget_exceeded",
                f"cost budget exceeded: ${used.cost_usd:.4f} of ${budget.max_usd:g} used",
            )
        if used.turns >= cfg.max_turns:
            raise _Stop("max_turns", f"max_turns ({cfg.max_turns}) reached before the task ended")

    async def _tool(self, toolbox: ToolBox, block: dict[str, Any]) -> dict[str, Any]:
        name, args = block["name"], block["input"]
        await self._say(f"tool {name} {self.redactor.text(_short(args))}")
        result = await toolbox.call(name, args)
        out: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": block["id"],
            "content": self.redactor.text(result.content),
        }
        if result.is_error:
            out["is_error"] = True
        return out

    # -- task, outputs, accounting -----------------------------------------------------

    def task(self) -> str:
        return task_prompt(self.ctx.ticket, self.ctx.inputs, self.ctx.agent.output_files)

    async def _outputs(self) -> dict[str, Any]:
        files: dict[str, str] = {}
        for declared in self.ctx.agent.output_files:
            try:
                path = output_file_path(declared)
                files[declared] = (await self.ctx.vm.get_file(path)).decode("utf-8", "replace")
            except VMError:
                raise _Stop(
                    "missing_output", f"declared output file {declared!r} was not written"
                ) from None
        outputs: dict[str, Any] = {"answer": self.answer}
        if files:
            outputs["files"] = files
        return outputs

    def _add_usage(self, used: Usage) -> None:
        total = self.usage + used
        total.stop_reason = self.usage.stop_reason
        total.cost_usd = cost_usd(total, self.price)
        self.usage = total

    def _on_rejected_usage(self, raw: Any) -> None:
        self._add_usage(replace(read_usage(raw).usage, turns=0))  # billed, but no turn
        self.events.append({"type": "rejected_response_usage", "usage": dict(raw)})

    async def _on_retry(self, attempt: int, reason: str, delay: float) -> None:
        reason = self.redactor.text(reason)
        self.events.append(
            {
                "type": "retry",
                "turn": self.usage.turns + 1,
                "attempt": attempt,
                "reason": reason,
                "delay": round(delay, 3),
            }
        )
        await self._say(f"attempt {attempt} failed ({reason}); retrying in {delay:.2f}s")

    def _vm_env(self) -> dict[str, str]:
        return {
            k: v
            for k, v in self.ctx.agent.env.items()
            if not k.startswith("ANTHROPIC_") and self.api_key not in v
        }

    async def _say(self, text: str) -> None:
        """One line of the step's log (a line break the model wrote, in a tool's name say,
        is shown as `\\n`: it cannot make a line that looks like the engine's own)."""
        text = one_line_of(self.redactor.text(text))
        log.info("%s", text, extra={"run_id": self.ctx.run_id, "step_id": self.ctx.step_id})
        if self.ctx.log is not None:
            result = self.ctx.log("agent", text + "\n")
            if inspect.isawaitable(result):
                await result

    def _write_transcript(self, outputs: dict[str, Any], error: str | None) -> None:
        cfg = self.config
        doc = {
            "agent": self.ctx.agent.ref,
            "kind": "claude",
            "step_id": self.ctx.step_id,
            "run_id": self.ctx.run_id,
            "model": cfg.model,
            "base_url": self.base_url,
            "system": cfg.system_prompt,
            "tools": list(cfg.tools),
            "max_tokens": cfg.max_tokens,
            "max_turns": cfg.max_turns,
            "budget": cfg.budget.model_dump(),
            "messages": self.messages,
            "turns": self.turns,
            "events": self.events,
            "usage": asdict(self.usage),
            "outputs": outputs,
            "error": error,
        }
        path = Path(self.ctx.artifacts_dir) / TRANSCRIPT_NAME
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(self.redactor.data(doc), indent=2, default=str))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not write transcript %s: %s", path, exc)


def _short(args: Any, limit: int = 200) -> str:
    text = json.dumps(args, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
