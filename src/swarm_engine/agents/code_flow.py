"""Where a value travels through the script's own variables, for `agents.shell_code`: a
reference assigned to a variable (`X=${inputs.v}`, `out=$(printf '%s' "${inputs.v}")`,
`Y=$X`) is refused where that variable reaches a program's environment (its name exported
anywhere in the script: `export X`, `declare -x X`; `set -a`/`set -o allexport`
anywhere; a name programs read code from and a parent may have exported: `BASH_ENV`,
`PERL5OPT`, ...) or is expanded into code or a command's environment (`sh -c "echo $X"`,
`BASH_ENV=$X bash`). Order does not matter (`export X` first counts too), as a loop or
a function may run them in either order.

A shell function's positional parameters (`$1`, `"$@"`, `${1:-x}`) are followed like
references (`Flow.param`): a function whose body passes them only as data (`f() { echo
"$1"; }`) leaves a call's references to the usual rules; one that may run them (`eval
"$@"`, `sh -c "$1"`, `"$@"` as a command, `x=$1; eval "$x"`) refuses every reference.
"""

from __future__ import annotations

import re

from swarm_engine.agents.code_options import Why

CODE_VARIABLES = frozenset((
    "BASH_ENV", "ENV", "PS4", "SHELLOPTS", "BASHOPTS", "PROMPT_COMMAND", "IFS", "PATH",
    "CDPATH", "GLOBIGNORE", "PAGER", "EDITOR", "VISUAL", "MANPAGER", "BROWSER", "MAKEFLAGS",
    "MFLAGS", "RSYNC_RSH", "CVS_RSH", "TAR_OPTIONS", "TERMINFO", "HOME",
))  # fmt: skip
CODE_PREFIXES = ("LD_", "GIT_", "PERL", "PYTHON", "RUBY", "NODE_", "NPM_", "BASH_FUNC",
                 "LUA_", "JAVA", "_JAVA", "JDK_", "R_", "PHP", "LESS", "SSH_", "GNUMAKE",
                 "GCONV", "SQLITE", "M4", "EMACS", "VIM", "GDB", "XDG_")  # fmt: skip
"""Variables programs read code (or a command, a path to run from) from, which a parent
may have exported already, so that assigning one exports it: `PERL5OPT=${inputs.v};
perl ...` runs the value if `PERL5OPT` came in the environment."""

EXPORTED_WHY = (
    "a variable that reaches a program's environment (exported in the script, `set -a`,"
    " or a name programs read code from: BASH_ENV, PERL5OPT, NODE_OPTIONS, ...)",
    "read it from $INPUT_<KEY>, which the step has already, or give it as an argument",
    "",
)
ARITH_WHY = (
    "an arithmetic expression or a variable's name, which bash evaluates (a value"
    " `a[$(cmd)]` runs `cmd`)",
    "check that it is a number first (case ${{{path}}} in *[!0-9]*) exit 1;; esac), or read"
    " $INPUT_<KEY> there",
    "",
)
IDENTIFIERS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""Inside `$((...))` or `((...))`, a name is a variable whose value bash evaluates."""
PARAMS = re.compile(r"\$(?:[0-9@*]|\{[#!]?[0-9@*])")
"""A positional parameter (`$1`, `"$@"`, `${1:-x}`, `${#1}`, `${!1}`): a function's
arguments."""
WHICH = re.compile(r"\$(?:([0-9])|\{[#!]?([0-9]+)[^0-9])")
"""Which positional parameter an expansion is (`$1`, `${12}`, `${1:-x}`): else any."""
NAMES = re.compile(r"\$\{?[#!]?([A-Za-z_][A-Za-z0-9_]*)")


def code_variable(name: str) -> bool:
    """A variable programs read code from, which may have come exported (see above)."""
    return name in CODE_VARIABLES or name.startswith(CODE_PREFIXES)


class Flow:
    """What the script does with its variables and functions, across its commands."""

    def __init__(self) -> None:
        self.assigned: list[tuple[str, list[int], set[str]]] = []  # name, refs, names
        self.exported: set[str] = set()
        self.export_all = False  # `set -a`, `export "$N"`, `eval`, `.`: any name may be
        self.uses: list[tuple[set[str], Why, bool]] = []  # names expanded where a value is
        # code; True: as a whole word (`eval "$X"`), which is code on purpose but for a
        # function's argument it holds (`f() { x=$1; eval "$x"; }`)
        self.functions = False  # the script defines a shell function
        self.integers: set[str] = set()  # `declare -i N`, `-n`: assigning N evaluates
        self.params = -1  # the next pseudo-reference (a positional parameter) position
        self.which: dict[int, str] = {}  # a parameter's position -> "0", "1", ... ("@": any)
        self.scripts: list[tuple[set[str], bool, list[int], set[str], Why]] = []

    def param(self, which: str = "@") -> int:
        """A new position for a positional parameter (negative: no reference of the
        command; `ALIAS` is -1): `which` one (`"1"` for `$1`, `"@"` for `"$@"` or any)."""
        self.params -= 1
        self.which[self.params] = which
        return self.params

    def assign(self, name: str, refs: list[int], names: set[str]) -> None:
        """`name=...` standing alone (or `local name=...`): what its value holds."""
        self.assigned.append((name, refs, names))

    def script(
        self, script: tuple[set[str], bool], refs: list[int], names: set[str], why: Why
    ) -> None:
        """A shell's script that is one quoted expansion (`sh -c "$S" _ ${v}`: the names it
        expands, and whether it holds a positional parameter) and the references (and
        variables) given as its arguments: refused if the script's text is the command's
        own (a variable it assigns, a function's parameter), which is beyond reading here;
        from outside (`"$INPUT_S"`, the step's own `"$1"`) it is code on purpose."""
        self.scripts.append((script[0], script[1], refs, names, why))

    def use(self, names: set[str], why: Why, whole: bool = False) -> None:
        """Variables expanded where a value is code or a command's environment (as the
        whole word if `whole`: only a function's arguments they hold are refused)."""
        if names:
            self.uses.append((names, why, whole))

    def resolve(self, found: dict[int, Why]) -> None:
        """Refuse the references held by variables that reach code or an environment."""
        held: dict[str, set[int]] = {}
        changed = True
        while changed:  # `Y=$X` after or before `X=${inputs.v}`: Y holds it too
            changed = False
            for name, refs, names in self.assigned:
                have = held.setdefault(name, set())
                new = set(refs).union(*(held.get(n, set()) for n in names)) - have
                if new:
                    have |= new
                    changed = True
        own = {name for name, _, _ in self.assigned}
        for script, params, refs, names, why in self.scripts:
            if script & own or (params and self.functions):
                for pos in refs + [p for n in names for p in held.get(n, ())]:
                    found.setdefault(pos, why)
        for names, why, whole in self.uses:
            for name in names:
                for pos in held.get(name, ()):
                    if pos < 0 or not whole:
                        found.setdefault(pos, why)
        for name, positions in held.items():
            if name in self.integers:
                for pos in positions:
                    found.setdefault(pos, ARITH_WHY)
            if self.export_all or name in self.exported or code_variable(name):
                for pos in positions:
                    found.setdefault(pos, EXPORTED_WHY)
