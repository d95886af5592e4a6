"""``auditor audit``: the options every source shares, and the command body.

The body asks each provider's CLI module for its sources, then makes the one library call
(:func:`auditor.audit.run_audit`) and writes the outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from auditor import ruleset as rule_files
from auditor.cli.options import FailOn, Option, parse_until, tty_progress
from auditor.errors import EXIT_FINDINGS, InputError
from auditor.selection import AgentSelector

if TYPE_CHECKING:
    from auditor import drift
    from auditor import exceptions as accepted
    from auditor.audit import AuditConfig, AuditResult
    from auditor.connectors.base import Progress
    from auditor.emit import sarif
    from auditor.publish import OutputSet

COMMON_OPTIONS = [
    Option("days", Annotated[int, typer.Option(min=1, max=400, help="Window length in days.")], 30),
    Option(
        "until",
        Annotated[
            str | None,
            typer.Option(
                help="Window end (ISO-8601). Default: per cloud, the newest event no later than the collection "
                "time (or now)."
            ),
        ],
        None,
    ),
    Option(
        "agent_tag", Annotated[str, typer.Option(help="Tag key marking agent identities ('' to disable).")], "agent"
    ),
    Option(
        "agent",
        Annotated[list[str], typer.Option(help="Agent identity name or ARN glob (repeatable).", metavar="GLOB")],
        [],
    ),
    Option(
        "agents_file",
        Annotated[Path | None, typer.Option(help="File listing agent names or ARNs, one per line.")],
        None,
    ),
    Option("all_identities", Annotated[bool, typer.Option(help="Audit every identity, not only agents.")], False),
    Option(
        "rules",
        Annotated[
            list[Path],
            typer.Option(help="Extra rules folder (extends/overrides the shipped rules/).", metavar="DIR"),
        ],
        [],
    ),
    Option("out", Annotated[Path, typer.Option(help="Output folder (published as one set).")], Path("out")),
    Option(
        "fail_on",
        Annotated[FailOn, typer.Option(help="Exit 1 when a finding at or above this severity exists.")],
        FailOn.none,
    ),
    Option(
        "strict",
        Annotated[bool, typer.Option(help="Make every input problem the report would list fatal (exit 2).")],
        False,
    ),
    Option(
        "drop_unobservable",
        Annotated[
            bool,
            typer.Option(help="Leave unobservable permissions out of the generated policies (default: keep, listed)."),
        ],
        False,
    ),
    Option(
        "workers", Annotated[int | None, typer.Option(min=1, help="Parallel log readers (default: CPU count).")], None
    ),
    Option(
        "max_file_mib",
        Annotated[
            int,
            typer.Option(min=1, help="Largest log file read, in MiB once decompressed; larger ones are listed."),
        ],
        1024,
    ),
    Option(
        "exceptions",
        Annotated[
            Path | None,
            typer.Option(
                help="Accepted exceptions (YAML: identity, permissions or kind, reason, expires): accepted findings "
                "are marked, not counted and do not fail --fail-on; expired ones are open again.",
                metavar="FILE",
            ),
        ],
        None,
    ),
    Option(
        "baseline",
        Annotated[
            Path | None,
            typer.Option(
                help="The previous audit (its --out folder or report.json): write drift.json and drift.md.",
                metavar="PATH",
            ),
        ],
        None,
    ),
    Option(
        "fail_on_new",
        Annotated[
            FailOn,
            typer.Option(help="Exit 1 when a finding opened since --baseline (not accepted) is at or above this."),
        ],
        FailOn.none,
    ),
    Option(
        "iac_map",
        Annotated[
            Path | None,
            typer.Option(
                help="Where each identity's IAM is defined in your repository (YAML: identity glob, file, line): "
                "report.sarif puts its findings there for code scanning.",
                metavar="FILE",
            ),
        ],
        None,
    ),
    Option("quiet", Annotated[bool, typer.Option("--quiet", "-q", help="No summary table on stdout.")], False),
]


@dataclass(frozen=True)
class Common:
    """The shared options, parsed: what provider modules may use to build their sources."""

    days: int
    until: datetime | None
    selector: AgentSelector

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> Common:
        selector = AgentSelector.from_options(
            values["agent_tag"], values["agent"], values["agents_file"], values["all_identities"]
        )
        return cls(values["days"], parse_until(values["until"]), selector)


def run(values: Mapping[str, Any], providers: Sequence[ModuleType]) -> None:
    """Audit agent identities: findings, least-privilege policies, blocklist and report in --out.

    What loads polars (the drift baseline, exceptions, the outputs) is imported only when needed
    and after :func:`~auditor.audit.run_audit` has begun the log scans, so that they overlap."""
    from auditor.audit import AuditConfig

    common = Common.parse(values)
    progress = tty_progress()
    sources = [source for module in providers for source in module.sources(values, common, progress)]
    config = AuditConfig(
        sources=tuple(sources),
        days=common.days,
        until=common.until,
        selector=common.selector,
        rules=rule_files.load(values["rules"]),
        strict=values["strict"],
        drop_unobservable=values["drop_unobservable"],
        workers=values["workers"],
        max_file_bytes=values["max_file_mib"] << 20,
        exceptions=_exceptions(values["exceptions"]),
    )
    fail_on_new: FailOn = values["fail_on_new"]
    if fail_on_new is not FailOn.none and values["baseline"] is None:
        raise InputError("--fail-on-new needs --baseline", "pass the previous audit's --out folder or report.json")
    previous = _previous(values["baseline"])  # bad inputs fail before the audit
    iac = _iac_map(values["iac_map"])
    out: Path = values["out"]
    result, document = _audit_into(out, config, progress, previous, iac)

    from auditor import drift
    from auditor.emit.report_md import terminal_summary

    if not values["quiet"]:
        typer.echo(terminal_summary(document, str(out)))
    fail_on: FailOn = values["fail_on"]
    if fail_on is not FailOn.none and not result.findings_at_or_above(fail_on.value).is_empty():
        typer.echo(f"auditor: findings at or above {fail_on.value}: failing (--fail-on {fail_on.value})", err=True)
        raise typer.Exit(EXIT_FINDINGS)
    if fail_on_new is not FailOn.none and drift.opened_at_or_above(document["drift"]["summary"], fail_on_new.value):
        typer.echo(
            f"auditor: new findings at or above {fail_on_new.value} since {values['baseline']}: failing "
            f"(--fail-on-new {fail_on_new.value})",
            err=True,
        )
        raise typer.Exit(EXIT_FINDINGS)


def _audit_into(
    out: Path, config: AuditConfig, progress: Progress, previous: drift.Audit | None, iac: Sequence[sarif.IacLocation]
) -> tuple[AuditResult, dict[str, Any]]:
    """The audit, published to ``out`` as one set. ``out`` is taken while the log scan reads, so a second
    run to it refuses then, not once both have read their logs (the last to finish, maybe the older
    invocation, would have published); what writes the outputs loads there too (~20 ms the audit would
    wait for after the scan)."""
    from auditor.audit import run_audit

    with contextlib.ExitStack() as held:
        staged: list[OutputSet] = []

        def prepare_outputs() -> None:
            from auditor import drift  # noqa: F401
            from auditor.emit import report_md, write  # noqa: F401
            from auditor.publish import OutputSet

            staged.append(held.enter_context(OutputSet(out)))

        result = run_audit(config, progress, meanwhile=prepare_outputs)

        from auditor.emit.write import write_outputs

        return result, write_outputs(result, staged[0], previous, iac)  # taken: run_audit calls it before usage


def _exceptions(path: Path | None) -> tuple[accepted.Entry, ...]:
    if path is None:
        return ()
    from auditor import exceptions as accepted

    return accepted.load(path)


def _previous(path: Path | None) -> drift.Audit | None:
    if path is None:
        return None
    from auditor import drift

    return drift.load(path)


def _iac_map(path: Path | None) -> tuple[sarif.IacLocation, ...]:
    if path is None:
        return ()
    from auditor.emit import sarif

    return sarif.load_map(path)
