"""``auditor collect aws``, and the live-collection options ``auditor audit --aws`` shares with it.

Thin adapters: options become a :class:`~auditor.connectors.aws.live.LiveOptions`; the library does
the rest and raises :class:`~auditor.errors.AuditorError` for the CLI's one-line error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from auditor.connectors.aws.live import AdvisorScope, LiveOptions, UsageSource, collect_snapshot
from auditor.connectors.base import AuditRequest
from auditor.selection import AgentSelector

PANEL = "Live AWS collection"

collect_app = typer.Typer(
    no_args_is_help=True,
    help="Collect a snapshot straight from a cloud's APIs; audit it later with `auditor audit --aws-dir DIR`.",
)

Profile = Annotated[
    str | None, typer.Option(help="AWS profile (default: the standard credential chain).", rich_help_panel=PANEL)
]
Region = Annotated[
    str | None, typer.Option(help="Region for regional APIs (default: the profile's).", rich_help_panel=PANEL)
]
EndpointUrl = Annotated[
    list[str],
    typer.Option(
        help="Endpoint for every service (URL) or for one (SERVICE=URL, e.g. a VPC endpoint); repeatable.",
        metavar="[SERVICE=]URL",
        rich_help_panel=PANEL,
    ),
]
Org = Annotated[bool, typer.Option(help="Collect every active account of the AWS Organization.", rich_help_panel=PANEL)]
AssumeRole = Annotated[
    str | None,
    typer.Option(help="Role assumed in each member account with --org.", metavar="NAME", rich_help_panel=PANEL),
]
Usage = Annotated[
    UsageSource,
    typer.Option(
        help="Usage from the trail bucket (s3), lookup-events, athena or none; auto: athena with --athena-table, "
        "else the trail bucket, else LookupEvents.",
        rich_help_panel=PANEL,
    ),
]
Bucket = Annotated[
    str | None,
    typer.Option(help="Trail bucket (default: from cloudtrail:DescribeTrails).", rich_help_panel=PANEL),
]
Prefix = Annotated[str | None, typer.Option(help="Key prefix of the trail in --bucket.", rich_help_panel=PANEL)]
AthenaTable = Annotated[
    str | None,
    typer.Option(
        help="Athena table over the trail bucket: aggregate in Athena, read only the rows.",
        metavar="DB.TABLE",
        rich_help_panel=PANEL,
    ),
]
AthenaOutput = Annotated[
    str | None,
    typer.Option(
        help="Where Athena writes its result file (default: the workgroup's).", metavar="S3URI", rich_help_panel=PANEL
    ),
]
Snapshot = Annotated[
    Path | None,
    typer.Option(help="Keep the collected snapshot in DIR (default: a temporary folder).", rich_help_panel=PANEL),
]


def live_options(
    profile: str | None,
    region: str | None,
    endpoint_url: list[str],
    org: bool,
    assume_role: str | None,
    usage: UsageSource,
    bucket: str | None,
    prefix: str | None,
    athena_table: str | None,
    athena_output: str | None,
    **more: Any,
) -> LiveOptions:
    return LiveOptions(
        profile=profile,
        region=region,
        endpoints=tuple(endpoint_url),
        org=org,
        assume_role=assume_role,
        usage=usage,
        bucket=bucket,
        prefix=prefix,
        athena_table=athena_table,
        athena_output=athena_output,
        **more,
    )


@collect_app.command("aws")
def collect_aws(
    out: Annotated[Path, typer.Option(help="Snapshot folder: new, empty, or a previous snapshot to refresh.")],
    profile: Profile = None,
    region: Region = None,
    endpoint_url: EndpointUrl = [],  # noqa: B006
    org: Org = False,
    account: Annotated[list[str], typer.Option(help="With --org: only this account (repeatable).", metavar="ID")] = [],  # noqa: B006
    assume_role: AssumeRole = None,
    external_id: Annotated[str | None, typer.Option(help="ExternalId for --assume-role.")] = None,
    usage: Usage = UsageSource.auto,
    bucket: Bucket = None,
    prefix: Prefix = None,
    trail: Annotated[str | None, typer.Option(help="Trail name or ARN to read (default: the best one).")] = None,
    regions: Annotated[
        str | None, typer.Option(help="Only these regions' logs, comma-separated (default: all).")
    ] = None,
    athena_table: AthenaTable = None,
    athena_workgroup: Annotated[str, typer.Option(help="Athena workgroup.")] = "primary",
    athena_output: AthenaOutput = None,
    access_advisor: Annotated[
        AdvisorScope, typer.Option(help="Access Advisor (action level) for agents, all identities, or off.")
    ] = AdvisorScope.agents,
    days: Annotated[int, typer.Option(min=1, max=400, help="Window length in days.")] = 30,
    until: Annotated[str | None, typer.Option(help="Window end (ISO-8601). Default: now.")] = None,
    agent_tag: Annotated[str, typer.Option(help="Tag key marking agent identities ('' to disable).")] = "agent",
    agent: Annotated[
        list[str], typer.Option(help="Agent identity name or ARN glob (repeatable).", metavar="GLOB")
    ] = [],  # noqa: B006
    agents_file: Annotated[Path | None, typer.Option(help="File listing agent names or ARNs, one per line.")] = None,
    all_identities: Annotated[bool, typer.Option(help="Treat every identity as an agent.")] = False,
    download_workers: Annotated[int, typer.Option(min=1, help="Parallel S3 downloads.")] = 32,
    account_workers: Annotated[int, typer.Option(min=1, help="Accounts collected in parallel.")] = 8,
) -> None:
    """Collect grants, usage, event selectors and Access Advisor into a snapshot folder (read-only)."""
    from auditor.cli import _tty_progress, _until

    options = live_options(
        profile,
        region,
        endpoint_url,
        org,
        assume_role,
        usage,
        bucket,
        prefix,
        athena_table,
        athena_output,
        accounts=tuple(account),
        external_id=external_id,
        trail=trail,
        regions=tuple(r.strip() for r in (regions or "").split(",") if r.strip()),
        athena_workgroup=athena_workgroup,
        access_advisor=access_advisor,
        download_workers=download_workers,
        account_workers=account_workers,
    )
    request = AuditRequest(
        days=days,
        until=_until(until),
        selector=AgentSelector.from_options(agent_tag, agent, agents_file, all_identities),
        rule_dirs=(),
    )
    manifest = collect_snapshot(options, out, request, _tty_progress())
    typer.echo(summary(manifest, out))


def summary(manifest: dict[str, Any], out: Path) -> str:
    stats, window = manifest["stats"], manifest["window"]
    failed = f" ({stats['accounts_failed']} failed)" if stats["accounts_failed"] else ""
    lines = [
        f"collected {stats['accounts']} account(s){failed} for {window['start']} .. {window['end']} "
        f"in {stats['seconds']:.1f} s: {stats['objects_downloaded']:,} log objects "
        f"({stats['bytes_downloaded'] / 1e6:,.1f} MB) downloaded",
        f"snapshot: {out}",
    ]
    if manifest["gaps"]:
        lines.append(f"not collected: {len(manifest['gaps'])} problem(s), listed in {out / 'manifest.json'}")
    lines.append(f"audit it with: auditor audit --aws-dir {out}")
    return "\n".join(lines)
