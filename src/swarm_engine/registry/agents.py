"""Agent checks at registration: kind, kind settings, command templates, schemas, env.

Everything an agent definition can get wrong without running it is refused here, with one
line naming the file and the field, so that nothing bad reaches the registry.
"""

from __future__ import annotations

from swarm_engine.agents.files import INPUT_ENV_MAX_BYTES, MAX_ARG_BYTES
from swarm_engine.agents.kinds import AGENT_KINDS, check_definition
from swarm_engine.agents.shell_command import check_argv, check_command, whole_command_problem
from swarm_engine.errors import ConfigError
from swarm_engine.models import AgentSpec
from swarm_engine.templating import check_template, references

COMMAND_NAMESPACES = ("inputs", "ticket")
"""What an agent's `command` can refer to (a workflow step's inputs see more)."""


def check_agent(spec: AgentSpec, source: str) -> None:
    """Raise `ConfigError` ("<source>: <field>: <problem>") for the first problem of an
    agent definition that can be seen without running it:

    - `kind` is not one of `AGENT_KINDS`; `config` is not valid for the kind; `command`
      on a kind that runs no command;
    - `command`: a malformed `${`, a reference other than `${inputs.*}` / `${ticket.*}`,
      `${inputs.<key>}` where the `inputs` schema declares `properties` without `<key>`,
      or over `MAX_ARG_BYTES` before any substitution; in a command string, a reference
      where no quoting keeps a value one literal word (`agents.shell_command`);
    - `inputs` / `outputs` are not valid JSON Schemas, or hold a `$ref` that does not
      resolve within the schema (nothing is fetched: `swarm_engine.schemas`);
    - `env`: a value over `INPUT_ENV_MAX_BYTES` (its names, and NULs in its values, are
      `AgentSpec`'s to check: whenever a definition is read, a registry row included);
    - (`output_files` outside the VM workspace, naming the workspace itself or a folder
      are `AgentSpec`'s to refuse, by the rule the claude kinds read them with after
      their session, `vm.base.output_file_path`: whenever a definition is read, a
      registry row included.)
    """
    if spec.kind not in AGENT_KINDS:
        raise ConfigError(
            f"{source}: kind: unknown agent kind {spec.kind!r} "
            f"(known: {', '.join(sorted(AGENT_KINDS))})"
        )
    try:
        check_definition(spec)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    # in a helper process, within `CHECK_SECONDS`: checking a schema may cost any time
    from swarm_engine.schema_check import check_schemas

    schemas = {f: getattr(spec, f) for f in ("inputs", "outputs") if getattr(spec, f)}
    if schemas:
        check_schemas(schemas, source)
    if spec.command is not None:
        check_agent_command(spec, source)
    for name, value in spec.env.items():  # names: AgentSpec checks them on every read
        if len(value.encode()) > INPUT_ENV_MAX_BYTES:
            raise ConfigError(
                f"{source}: env.{name}: over {INPUT_ENV_MAX_BYTES // 1024} KiB "
                "(put large values in a file of the package)"
            )


def check_agent_command(spec: AgentSpec, source: str) -> None:
    """`check_agent`'s checks of `command` alone (cheap: no schema is compiled), raising
    `ConfigError` ("<source>: command...: <problem>"). Also run on every agent a plan
    will run (`engine.plan`): a registry row is anyone's, so a command registration would
    refuse (`echo ${inputs.x`) fails its ticket at plan time with this line, before a VM."""
    command = spec.command
    if command is None:
        return
    problem = check_template(command, COMMAND_NAMESPACES, where="command")
    if problem:
        raise ConfigError(f"{source}: {problem[0]}: {problem[1]}")
    if isinstance(command, list):
        unsafe_argv = check_argv(command)
        if unsafe_argv:
            raise ConfigError(f"{source}: command{unsafe_argv}")
    if isinstance(command, str):
        unsafe = check_command(command) or whole_command_problem(command)
        if unsafe:
            raise ConfigError(f"{source}: command: {unsafe}")
    text = command if isinstance(command, str) else " ".join(command or [])
    if len(text.encode()) > MAX_ARG_BYTES:
        raise ConfigError(
            f"{source}: command: over {(MAX_ARG_BYTES + 1) // 1024} KiB, the kernel's limit "
            "for one argument (put the script in a file of the package)"
        )
    declared = spec.inputs.get("properties")
    if not isinstance(declared, dict):
        return
    for path in references(command):
        parts = path.split(".")
        if parts[0] == "inputs" and parts[1] not in declared:
            raise ConfigError(
                f"{source}: command: ${{{path}}}: {parts[1]!r} is not declared in "
                f"inputs.properties (declared: {', '.join(sorted(declared)) or 'none'})"
            )
