"""The ``auditor`` command: thin adapters over the library; every error is one line.

The ``audit`` command is assembled from the shared options (:mod:`auditor.cli.audit`) and those of
every provider module in this package (a module with ``PROVIDER``, ``AUDIT_OPTIONS``, ``sources``
and ``register``), so a new cloud adds one module here and changes no command.

Exit codes: 0 clean, 1 findings at or above ``--fail-on``, 2 bad input or usage, 3 internal error,
130 interrupted.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import os
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

# Rich formatting costs ~0.15 s of start-up: only help pages use it.
os.environ.setdefault("TYPER_USE_RICH", "1" if len(sys.argv) < 2 or {"--help", "-h"} & set(sys.argv) else "0")

import typer

from auditor import __version__
from auditor.cli import approvals as approvals_command
from auditor.cli import audit as audit_command
from auditor.cli.options import FailOn, command, interruptible
from auditor.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, AuditorError

#: Allocations between young-generation garbage collections in a command-line run (CPython: 700).
RUN_GC_THRESHOLD = 50_000

APP_SETTINGS: dict[str, Any] = {
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "no_args_is_help": True,
    "help": "Permission scope auditor for AI-agent identities: granted vs used, least-privilege policies, blocklists.",
}
app = typer.Typer(**APP_SETTINGS)
collect_app = typer.Typer(
    no_args_is_help=True,
    help="Collect a snapshot straight from a cloud's APIs; audit it later with `auditor audit --aws-dir DIR`.",
)
app.add_typer(collect_app, name="collect")
app.add_typer(approvals_command.app, name="approvals")


def provider_modules() -> list[ModuleType]:
    """Every provider module of this package, in name order."""
    names = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])]
    modules = [importlib.import_module(f"auditor.cli.{name}") for name in names]
    return [m for m in modules if hasattr(m, "PROVIDER")]


PROVIDERS = provider_modules()
for _module in PROVIDERS:
    _module.register(app, collect_app)

app.command("audit")(
    command(
        [*(o for m in PROVIDERS for o in m.AUDIT_OPTIONS), *audit_command.COMMON_OPTIONS],
        lambda values: audit_command.run(values, PROVIDERS),
        "Audit agent identities: findings, least-privilege policies, blocklist and report in --out.",
    )
)


@app.command("diff")
@interruptible
def diff_command(
    previous: Annotated[Path, typer.Argument(help="The earlier audit: its --out folder or report.json.")],
    new: Annotated[Path, typer.Argument(help="The later audit: its --out folder or report.json.")],
    out: Annotated[Path | None, typer.Option(help="Also write drift.json and drift.md into this folder.")] = None,
    fail_on_new: Annotated[
        FailOn, typer.Option(help="Exit 1 when a finding opened since PREVIOUS (not accepted) is at or above this.")
    ] = FailOn.none,
    as_json: Annotated[bool, typer.Option("--json", help="Print drift.json instead of the table.")] = False,
) -> None:
    """What changed per identity between two audits: grants, use, destructive grants, findings."""
    from auditor.cli import diff

    diff.run(previous, new, out, fail_on_new, as_json)


@app.command("rules")
def rules_check(
    rules: Annotated[
        list[Path], typer.Option(help="Extra rules folder to validate with the shipped ones.", metavar="DIR")
    ] = [],  # noqa: B006
) -> None:
    """Validate the rules (shipped + --rules) and list them."""
    from auditor import ruleset as rule_files
    from auditor.catalog import aws_catalog
    from auditor.connectors.aws.actions import EventActionMapper
    from auditor.connectors.aws.coverage import ObservabilityRules
    from auditor.connectors.gcp.rules import GcpRules
    from auditor.narrowing import NarrowingRules

    ruleset = rule_files.load(rules)
    EventActionMapper.from_rules(ruleset, aws_catalog())
    ObservabilityRules.of(ruleset)
    NarrowingRules.of(ruleset)
    GcpRules.of(ruleset)
    typer.echo(f"{len(ruleset.destructive)} destructive rules, {len(ruleset.escalation)} escalation methods from:")
    for path in ruleset.sources:
        typer.echo(f"  {path}")


@app.command()
def version() -> None:
    """Print the version and the catalog versions."""
    from auditor.catalog import aws_catalog

    typer.echo(f"auditor {__version__}; AWS catalog {aws_catalog().version} ({len(aws_catalog()):,} actions)")


def main() -> None:
    """Entry point: one line on stderr for every error, never a traceback (AUDITOR_DEBUG=1 shows it).

    Usage errors are Typer's own (exit 2); SystemExit from Typer passes through untouched.
    """
    try:
        app_for(sys.argv[1:])()
    except AuditorError as exc:
        typer.echo(f"auditor: error: {exc.one_line()}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except Exception as exc:  # a bug: still one line, with a way to see more
        if os.environ.get("AUDITOR_DEBUG"):
            raise
        message = str(exc).splitlines()[0] if str(exc) else ""
        typer.echo(
            f"auditor: internal error: {type(exc).__name__}: {message} (rerun with AUDITOR_DEBUG=1 for details)",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)


def app_for(args: list[str]) -> typer.Typer:
    """The app to run ``args`` with. For ``audit ...``, one that holds that command alone: typer builds
    every command's options before it parses (~15 ms, before the log scan can begin), and the
    others are not run."""
    if args[:1] != ["audit"]:
        return app
    alone = typer.Typer(**APP_SETTINGS)
    alone.callback()(_no_options)  # a group still, as with several commands: "audit" names the command
    alone.registered_commands = [c for c in app.registered_commands if c.name == "audit"]
    return alone


def _no_options() -> None:
    """The group's own callback: it takes no options."""


def entry() -> None:
    """The console script and ``python -m auditor``: :func:`main`, then exit without the interpreter's
    teardown, which only frees memory (~0.06 s after an audit of 150,000 permissions). The outputs are
    published and closed by then; exit handlers (temporary snapshot folders) still run.

    Young-generation collections run every :data:`RUN_GC_THRESHOLD` allocations instead of 700: an
    audit allocates millions of short-lived objects with hardly any cycles, and collecting them
    often was ~5% of a small audit."""
    gc.set_threshold(RUN_GC_THRESHOLD, *gc.get_threshold()[1:])
    try:
        main()
        status = 0
    except SystemExit as exc:
        status = _status(exc)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can reach the reader
            stream.flush()
    os._exit(status)


def _status(exc: SystemExit) -> int:
    """The exit status ``sys.exit(code)`` gives: None is 0, a message is printed and is 1."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1
