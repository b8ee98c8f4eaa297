"""nox sessions: tests, lint, typecheck, fuzz, bench."""

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "trikernel", "tests", "bench")
    session.run("ruff", "format", "--check", "trikernel")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("mypy", "trikernel")


@nox.session
def fuzz(session: nox.Session) -> None:
    """Long hypothesis runs (ZMTP codec, messages, hostile peers)."""
    session.install("-e", ".[test]")
    session.run(
        "python", "-m", "pytest", "-q", "-m", "slow", "--hypothesis-profile=fuzz", *session.posargs
    )


@nox.session
def bench(session: nox.Session) -> None:
    session.install("-e", ".[test,bench]")
    session.run("python", "bench/zmtp.py")
    session.run("python", "bench/kernels.py")
