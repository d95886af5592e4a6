"""Command line: ``auditor audit`` and friends. Thin adapters over the library; errors are one line.

Exit codes: 0 clean, 1 findings at or above ``--fail-on``, 2 bad input or usage.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from auditor import __version__
from auditor import cli_collect as live
from auditor.audit import AuditOptions, analyze, gather
from auditor.cli_gcp import collect_gcp, gcp_connectors
from auditor.connectors.aws.files import AwsFiles
from auditor.connectors.aws.live import AwsLive, UsageSource
from auditor.connectors.base import AuditRequest, Connector, Progress, no_progress
from auditor.emit.report_md import terminal_summary
from auditor.emit.write import write_outputs
from auditor.errors import EXIT_BAD_INPUT, EXIT_FINDINGS, AuditorError, InputError
from auditor.ruleset import load_rules
from auditor.selection import AgentSelector

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Permission scope auditor for AI-agent identities: granted vs used, least-privilege policies, blocklists.",
)


class FailOn(StrEnum):
    critical = "critical"
    high = "high"
    medium = "medium"
    low = "low"
    none = "none"


def _tty_progress() -> Progress:
    """Progress on stderr when it is a terminal; silent otherwise (CI logs stay clean)."""
    if not sys.stderr.isatty():
        return no_progress
    last = [0.0]

    def draw(what: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < 0.1:
            return
        last[0] = now
        percent = 100 * done // total if total else 100
        sys.stderr.write(f"\r{what}: {done:,}/{total:,} ({percent}%)" + ("\n" if done >= total else ""))
        sys.stderr.flush()

    return draw


def _until(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"--until {value!r} is not an ISO-8601 date or time", "e.g. 2026-11-20T23:59:59Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _aws_connectors(
    aws_dir: list[Path], aws_auth: list[Path], cloudtrail: list[Path], selectors: list[Path], data_events: str | None
) -> list[Connector]:
    connectors: list[Connector] = [AwsFiles.from_dir(d, data_events) for d in aws_dir]
    if aws_auth or cloudtrail:
        if not (aws_auth and cloudtrail):
            raise InputError("--aws-auth and --cloudtrail go together", "pass both, or --aws-dir DIR")
        connectors.append(AwsFiles(tuple(aws_auth), tuple(cloudtrail), tuple(selectors), data_events))
    elif selectors:
        raise InputError("--event-selectors needs --aws-auth and --cloudtrail", "or put it in the --aws-dir folder")
    return connectors


@app.command()
def audit(
    aws_dir: Annotated[
        list[Path],
        typer.Option(
            help="Folder with authorization-details*.json, CloudTrail logs "
            "(AWSLogs/ tree or *.ndjson) and optional event-selectors*.json.",
            metavar="DIR",
        ),
    ] = [],  # noqa: B006
    aws_auth: Annotated[
        list[Path], typer.Option(help="Output of `aws iam get-account-authorization-details`.", metavar="FILE")
    ] = [],  # noqa: B006
    cloudtrail: Annotated[
        list[Path],
        typer.Option(
            help="CloudTrail logs: a synced AWSLogs/ folder, a .json(.gz) file or an .ndjson export.", metavar="PATH"
        ),
    ] = [],  # noqa: B006
    event_selectors: Annotated[
        list[Path],
        typer.Option(
            help="Output of `aws cloudtrail get-event-selectors`: which data events the trail logs.", metavar="FILE"
        ),
    ] = [],  # noqa: B006
    data_events: Annotated[
        str | None,
        typer.Option(
            help="Declare the trail's data events instead: all, none, or services such as s3,dynamodb,lambda."
        ),
    ] = None,
    gcp_dir: Annotated[
        list[Path],
        typer.Option(
            help="GCP snapshot folder: policies/projects/<P>.json, roles/, logs/ or a log sink's "
            "cloudaudit.googleapis.com/ tree (what `auditor collect gcp` writes).",
            metavar="DIR",
            rich_help_panel="GCP",
        ),
    ] = [],  # noqa: B006
    gcp_policy: Annotated[
        list[Path],
        typer.Option(
            help="`gcloud projects get-iam-policy P --format=json` output.", metavar="FILE", rich_help_panel="GCP"
        ),
    ] = [],  # noqa: B006
    gcp_roles: Annotated[
        list[Path],
        typer.Option(
            help="`gcloud iam roles describe` outputs (files or folders).", metavar="PATH", rich_help_panel="GCP"
        ),
    ] = [],  # noqa: B006
    gcp_logs: Annotated[
        list[Path],
        typer.Option(
            help="`gcloud logging read --format=json` output or sink NDJSON.", metavar="PATH", rich_help_panel="GCP"
        ),
    ] = [],  # noqa: B006
    gcp_insights: Annotated[
        list[Path],
        typer.Option(help="IAM Recommender insights JSON (extra usage signal).", metavar="FILE", rich_help_panel="GCP"),
    ] = [],  # noqa: B006
    gcp_project: Annotated[
        list[str],
        typer.Option(help="Collect this project live first (ADC credentials).", metavar="P", rich_help_panel="GCP"),
    ] = [],  # noqa: B006
    bigquery_table: Annotated[
        str | None,
        typer.Option(
            help="With --gcp-project: aggregate the logs in this BigQuery log-sink table.", rich_help_panel="GCP"
        ),
    ] = None,
    gcp_snapshot: Annotated[
        Path | None,
        typer.Option(
            help="Keep the --gcp-project snapshot in DIR (default: a temporary folder).", rich_help_panel="GCP"
        ),
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=400, help="Window length in days.")] = 30,
    until: Annotated[str | None, typer.Option(help="Window end (ISO-8601). Default: the newest event seen.")] = None,
    agent_tag: Annotated[str, typer.Option(help="Tag key marking agent identities ('' to disable).")] = "agent",
    agent: Annotated[
        list[str], typer.Option(help="Agent identity name or ARN glob (repeatable).", metavar="GLOB")
    ] = [],  # noqa: B006
    agents_file: Annotated[Path | None, typer.Option(help="File listing agent names or ARNs, one per line.")] = None,
    all_identities: Annotated[bool, typer.Option(help="Audit every identity, not only agents.")] = False,
    rules: Annotated[
        list[Path], typer.Option(help="Extra rules folder (extends/overrides the shipped rules/).", metavar="DIR")
    ] = [],  # noqa: B006
    out: Annotated[Path, typer.Option(help="Output folder (written atomically).")] = Path("out"),
    fail_on: Annotated[
        FailOn, typer.Option(help="Exit 1 when a finding at or above this severity exists.")
    ] = FailOn.none,
    strict: Annotated[bool, typer.Option(help="Treat any unreadable input (file, record, policy) as fatal.")] = False,
    drop_unobservable: Annotated[
        bool,
        typer.Option(help="Leave unobservable permissions out of the generated policies (default: keep them, listed)."),
    ] = False,
    workers: Annotated[int | None, typer.Option(min=1, help="Parallel log readers (default: CPU count).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary table on stdout.")] = False,
    aws: Annotated[
        bool,
        typer.Option(
            help="Collect from the AWS APIs first (`auditor collect aws --help` has every option).",
            rich_help_panel=live.PANEL,
        ),
    ] = False,
    profile: live.Profile = None,
    region: live.Region = None,
    endpoint_url: live.EndpointUrl = [],  # noqa: B006
    org: live.Org = False,
    assume_role: live.AssumeRole = None,
    usage: live.Usage = UsageSource.auto,
    bucket: live.Bucket = None,
    prefix: live.Prefix = None,
    athena_table: live.AthenaTable = None,
    athena_output: live.AthenaOutput = None,
    snapshot: live.Snapshot = None,
) -> None:
    """Audit agent identities: findings, least-privilege policies, blocklist and report in --out."""
    window_end = _until(until)
    connectors = _aws_connectors(aws_dir, aws_auth, cloudtrail, event_selectors, data_events)
    if aws:  # collect a snapshot, then audit it exactly as --aws-dir would
        options = live.live_options(
            profile, region, endpoint_url, org, assume_role, usage, bucket, prefix, athena_table, athena_output
        )
        connectors.append(AwsLive(options, snapshot, data_events))
    elif snapshot is not None or org or profile:
        raise InputError("--snapshot, --org and --profile collect from AWS: they need --aws", "add --aws")
    connectors += gcp_connectors(
        gcp_dir,
        gcp_policy,
        gcp_roles,
        gcp_logs,
        gcp_insights,
        gcp_project,
        bigquery_table,
        gcp_snapshot,
        days,
        window_end,
        _tty_progress(),
    )
    ruleset = load_rules(rules)
    request = AuditRequest(
        days=days,
        until=window_end,
        selector=AgentSelector.from_options(agent_tag, agent, agents_file, all_identities),
        rule_dirs=ruleset.dirs,
        workers=workers,
    )
    data = gather(connectors, request, _tty_progress())
    result = analyze(data, ruleset, AuditOptions(drop_unobservable=drop_unobservable, strict=strict))
    document = write_outputs(result, out)
    if not quiet:
        typer.echo(terminal_summary(document, str(out)))
    if fail_on is not FailOn.none and not result.findings_at_or_above(fail_on.value).is_empty():
        typer.echo(f"auditor: findings at or above {fail_on.value}: failing (--fail-on {fail_on.value})", err=True)
        raise typer.Exit(EXIT_FINDINGS)


app.add_typer(live.collect_app, name="collect")
live.collect_app.command("gcp")(collect_gcp)


@app.command("rules")
def rules_check(
    rules: Annotated[
        list[Path], typer.Option(help="Extra rules folder to validate with the shipped ones.", metavar="DIR")
    ] = [],  # noqa: B006
) -> None:
    """Validate the rules (shipped + --rules) and list them."""
    ruleset = load_rules(rules)
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
        app()
    except AuditorError as exc:
        typer.echo(f"auditor: error: {exc.one_line()}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        typer.echo("auditor: interrupted; no output was changed", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: still one line, with a way to see more
        if os.environ.get("AUDITOR_DEBUG"):
            raise
        typer.echo(
            f"auditor: internal error: {type(exc).__name__}: {exc} (rerun with AUDITOR_DEBUG=1 for details)", err=True
        )
        sys.exit(3)
