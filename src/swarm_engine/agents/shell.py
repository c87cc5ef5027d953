"""`shell`: runs a command in the VM.

The command comes from the agent definition (`command:` in agent.yaml, a template where
`${inputs.*}` and `${ticket.*}` are substituted) or, for the built-in `shell` agent,
from `inputs.command` (data: run as given, never substituted). A value never becomes shell
code: in a command string each reference is an expansion of a `SWARM_REF_n` variable
holding the value, quoted to stay one literal word (`agents.shell_command`); in an argv list
each element, references and all, is one argument. The agent's package files
are copied into the workspace first. Inputs reach the command through the inputs file
(`$SWARM_INPUTS`, always) and `$INPUT_<KEY>` variables (small scalars only; see
`agents.files.input_env`). A command that would not fit the kernel's limit for one
argument fails the step before anything runs.
Outputs: stdout, stderr, exit_code, plus the keys of any JSON object the command wrote
to `$SWARM_OUTPUTS` (a file setting one of the engine's own keys fails the step:
`agents.files.merged_outputs`). A non-zero exit or a timeout fails the step. stdout/stderr are
bounded (head, `[... N bytes cut ...]`, tail); a cut stream adds `stdout_bytes` /
`stderr_bytes`, its true size in bytes.
"""

from __future__ import annotations

import inspect
import json
import shlex
from codecs import getincrementaldecoder
from collections.abc import Mapping
from typing import Any

from swarm_engine.agents.base import ModelApiNeeds, StepContext, StepOutcome
from swarm_engine.agents.files import (
    ENV_PRELUDE,
    MAX_ARG_BYTES,
    input_env,
    merged_outputs,
    put_inputs,
    read_outputs_file,
    tail,
    upload_package,
)
from swarm_engine.agents.shell_command import (
    check_argv,
    render_command,
    whole_command_problem,
    whole_reference,
)
from swarm_engine.errors import AgentError
from swarm_engine.models import AgentSpec
from swarm_engine.records import cut_message
from swarm_engine.templating import TICKET_FIELDS, TemplateError, lookup, render
from swarm_engine.vm.base import Stream

INPUTS_HINT = "read large inputs from the inputs file ($SWARM_INPUTS) instead of ${inputs.<key>}"


def check_exec_size(what: str, text: str, hint: str = INPUTS_HINT) -> None:
    """Raise `AgentError` (one line, ending with `hint`) if `text` cannot be one argv or
    environment string of an exec: over `MAX_ARG_BYTES` (UTF-8), holding a NUL, or not
    encodable."""
    try:
        size = len(text.encode())
    except UnicodeEncodeError as exc:
        raise AgentError(f"{what} cannot be passed to a process: {exc.reason}") from exc
    if "\0" in text:
        raise AgentError(f"{what} contains a NUL character; {hint}")
    if size > MAX_ARG_BYTES:
        raise AgentError(
            f"{what} is {size} bytes, over the kernel's limit of "
            f"{(MAX_ARG_BYTES + 1) // 1024} KiB for one argument; {hint}"
        )


class ShellAgent:
    kind = "shell"

    def __init__(self, host_config: Mapping[str, Any] | None = None) -> None:
        self.host_config = dict(host_config or {})

    def preflight(self, agent: AgentSpec) -> None:
        return None

    def model_api(self, agent: AgentSpec) -> ModelApiNeeds | None:
        """`model_api:` declared: the command may call the model API through the gateway."""
        spec = agent.model_api_spec
        if spec is None:
            return None
        return ModelApiNeeds(max_tokens=spec.budget.max_tokens, max_usd=spec.budget.max_usd)

    def command(self, ctx: StepContext) -> tuple[str, dict[str, str]]:
        """The `sh -c` text to run and the `SWARM_REF_n` variables it expands. Raises
        `AgentError` (one line) if there is none, a reference in the agent's command does
        not resolve or stands where it cannot be one word, or the command with its values
        cannot be exec'd (over `MAX_ARG_BYTES` together, or holding a NUL)."""
        spec: Any = ctx.agent.command
        refs: dict[str, str] = {}
        if spec is not None:  # a definition: a template
            context = {
                "inputs": ctx.inputs,
                "ticket": {k: ctx.ticket.get(k) for k in TICKET_FIELDS},
            }
            try:
                refused = whole_command_problem(spec)
                if refused is not None:  # a row written past registration and the plan
                    raise AgentError(f"command: {refused}")
                whole = whole_reference(spec) if isinstance(spec, str) else None
                if whole is not None:
                    # the definition hands its whole command to one value: that value is
                    # the script, as `inputs.command` is for the built-in shell agent
                    spec = lookup(whole, context)
                    if not isinstance(spec, str):
                        raise AgentError(f"command: ${{{whole}}} is not text")
                elif isinstance(spec, str):
                    spec, refs = render_command(spec, context)
                else:
                    unsafe = check_argv(spec) if isinstance(spec, list) else None
                    if unsafe:  # a definition stored before this rule, or by hand
                        raise AgentError(f"command{unsafe}")
                    spec = render(spec, context)
            except TemplateError as exc:
                raise AgentError(f"command: {exc}") from exc
        else:  # inputs.command of the built-in shell agent: data, run as given
            spec = ctx.inputs.get("command")
            if spec is None:
                raise AgentError(
                    f"agent {ctx.agent.ref} has no command and inputs.command is missing"
                )
        if isinstance(spec, list):
            spec = " ".join(shlex.quote(a if isinstance(a, str) else json.dumps(a)) for a in spec)
        if not isinstance(spec, str) or not spec.strip():
            raise AgentError("command must be a non-empty string or list")
        # the values travel as environment strings (`SWARM_REF_n=value`); together with
        # the command they stay within one argument's limit, as when they were pasted in
        values = "".join(f"{k}={v}" for k, v in refs.items())
        check_exec_size("the command after substitution", ENV_PRELUDE + spec + values)
        return spec, refs

    async def run(self, ctx: StepContext) -> StepOutcome:
        try:
            command, refs = self.command(ctx)
        except AgentError as exc:
            return StepOutcome(error=str(exc))
        await upload_package(
            ctx.vm, ctx.agent, ctx.packages_dir, timeout=ctx.timeout_seconds, held=ctx.package
        )
        env = {k: str(v) for k, v in ctx.agent.env.items()}
        try:
            for key, value in env.items():
                check_exec_size(
                    f"env.{cut_message(key, 80)}", f"{key}={value}", "shorten it in agent.yaml"
                )
        except AgentError as exc:
            return StepOutcome(error=str(exc))
        env.update(input_env(ctx.inputs))
        env.update(refs)
        if ctx.model_api is not None:  # the gateway and the step's token (never the key)
            env.update(ctx.model_api.env)
        await put_inputs(ctx.vm, ctx.inputs, ctx.inputs_json)

        # a character cut between two chunks is decoded whole, once its end has come
        streams: tuple[Stream, ...] = ("stdout", "stderr")
        decoders = {name: getincrementaldecoder("utf-8")("replace") for name in streams}

        async def log(name: Stream, text: str) -> None:
            if ctx.log is not None and text:
                maybe = ctx.log(name, text)
                if inspect.isawaitable(maybe):
                    await maybe

        async def stream(name: Stream, chunk: bytes) -> None:
            await log(name, decoders[name].decode(chunk))

        result = await ctx.vm.exec(
            ENV_PRELUDE + command, env=env, timeout=ctx.timeout_seconds, on_output=stream
        )
        for name in streams:  # a character the command left unfinished
            await log(name, decoders[name].decode(b"", final=True))
        outputs: dict[str, Any] = {
            "stdout": result.stdout.decode(errors="replace"),
            "stderr": result.stderr.decode(errors="replace"),
            "exit_code": result.exit_code,
        }
        # a stream longer than the VM keeps has its middle cut: record its true size
        if result.stdout_cut:
            outputs["stdout_bytes"] = result.stdout_bytes
        if result.stderr_cut:
            outputs["stderr_bytes"] = result.stderr_bytes
        if result.timed_out:
            return StepOutcome(
                outputs=outputs,
                exit_code=result.exit_code,
                error=f"timed out after {ctx.timeout_seconds:g}s; process tree killed",
            )
        written_error: str | None = None
        try:
            outputs = merged_outputs(outputs, await read_outputs_file(ctx.vm))
        except AgentError as exc:
            if result.exit_code == 0:
                return StepOutcome(outputs=outputs, exit_code=0, error=str(exc))
            written_error = str(exc)
        if result.exit_code != 0:
            # the command's own failure comes first; a bad outputs file it left is only
            # mentioned after it (a failed step's outputs are not used anyway)
            detail = tail(result.stderr) or tail(result.stdout)
            error = f"command exited with {result.exit_code}" + (f": {detail}" if detail else "")
            if written_error is not None:
                error += f" ({cut_message(written_error, 200)}; ignored)"
            return StepOutcome(outputs=outputs, exit_code=result.exit_code, error=error)
        return StepOutcome(outputs=outputs, exit_code=0)
