"""AWS on the command line: the ``auditor audit`` AWS options and ``auditor collect aws``.

Offline, ``--aws-dir`` (or ``--aws-auth`` + ``--cloudtrail``) names the files. With ``--aws`` the
APIs are read into a snapshot first (kept with ``--snapshot``, else a temporary folder), which is
then audited exactly as ``--aws-dir`` would: a live audit equals the offline audit of its snapshot.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from auditor.cli.options import Option, interruptible, parse_until, tty_progress
from auditor.connectors.aws.files import AwsFiles
from auditor.connectors.aws.live_options import AdvisorScope, CollectRequest, LiveOptions, UsageSource
from auditor.connectors.base import Progress, Source
from auditor.errors import InputError
from auditor.selection import AgentSelector

PROVIDER = "aws"
PANEL = "Live AWS collection"

#: Temporary snapshot folders of ``audit --aws`` without ``--snapshot``, removed at exit.
_TEMPORARY: list[tempfile.TemporaryDirectory[str]] = []

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
    str | None, typer.Option(help="Trail bucket (default: from cloudtrail:DescribeTrails).", rich_help_panel=PANEL)
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

AUDIT_OPTIONS = [
    Option(
        "aws_dir",
        Annotated[
            list[Path],
            typer.Option(
                help="Folder with authorization-details*.json, CloudTrail logs (any layout or export, recognised by "
                "content) and optional event-selectors*.json.",
                metavar="DIR",
            ),
        ],
        [],
    ),
    Option(
        "aws_auth",
        Annotated[
            list[Path], typer.Option(help="Output of `aws iam get-account-authorization-details`.", metavar="FILE")
        ],
        [],
    ),
    Option(
        "cloudtrail",
        Annotated[
            list[Path],
            typer.Option(
                help="CloudTrail logs: a folder or a file, in any layout AWS or a SIEM writes.", metavar="PATH"
            ),
        ],
        [],
    ),
    Option(
        "event_selectors",
        Annotated[
            list[Path],
            typer.Option(
                help="Output of `aws cloudtrail get-event-selectors`: which data events the trail logs.", metavar="FILE"
            ),
        ],
        [],
    ),
    Option(
        "data_events",
        Annotated[
            str | None,
            typer.Option(
                help="Declare the trail's data events instead: all, none, or services such as s3,dynamodb,lambda."
            ),
        ],
        None,
    ),
    Option(
        "aws",
        Annotated[
            bool,
            typer.Option(
                help="Collect from the AWS APIs first (`auditor collect aws --help` has every option).",
                rich_help_panel=PANEL,
            ),
        ],
        False,
    ),
    Option("profile", Profile, None),
    Option("region", Region, None),
    Option("endpoint_url", EndpointUrl, []),
    Option("org", Org, False),
    Option("assume_role", AssumeRole, None),
    Option("usage", Usage, UsageSource.auto),
    Option("bucket", Bucket, None),
    Option("prefix", Prefix, None),
    Option("athena_table", AthenaTable, None),
    Option("athena_output", AthenaOutput, None),
    Option(
        "snapshot",
        Annotated[
            Path | None,
            typer.Option(
                help="Keep the collected snapshot in DIR (default: a temporary folder).", rich_help_panel=PANEL
            ),
        ],
        None,
    ),
]


def live_options(values: Mapping[str, Any], **more: Any) -> LiveOptions:
    return LiveOptions(
        profile=values["profile"],
        region=values["region"],
        endpoints=tuple(values["endpoint_url"]),
        org=values["org"],
        assume_role=values["assume_role"],
        usage=values["usage"],
        bucket=values["bucket"],
        prefix=values["prefix"],
        athena_table=values["athena_table"],
        athena_output=values["athena_output"],
        **more,
    )


def sources(values: Mapping[str, Any], common: Any, progress: Progress) -> list[Source]:
    """The AWS sources the options name; ``--aws`` collects a snapshot first."""
    found: list[Source] = [AwsFiles.from_dir(d, values["data_events"]) for d in values["aws_dir"]]
    auth, trail, selectors = values["aws_auth"], values["cloudtrail"], values["event_selectors"]
    if auth or trail:
        if not (auth and trail):
            raise InputError("--aws-auth and --cloudtrail go together", "pass both, or --aws-dir DIR")
        found.append(AwsFiles(tuple(auth), tuple(trail), tuple(selectors), values["data_events"]))
    elif selectors:
        raise InputError("--event-selectors needs --aws-auth and --cloudtrail", "or put it in the --aws-dir folder")
    if not values["aws"]:
        if values["snapshot"] is not None or values["org"] or values["profile"]:
            raise InputError("--snapshot, --org and --profile collect from AWS: they need --aws", "add --aws")
        return found
    from auditor.connectors.aws.live import collect_snapshot

    folder = values["snapshot"]
    if folder is None:
        holder = tempfile.TemporaryDirectory(prefix="auditor-snapshot-")
        _TEMPORARY.append(holder)
        folder = Path(holder.name)
    collect_snapshot(live_options(values), folder, CollectRequest(common.days, common.until, common.selector), progress)
    return [*found, AwsFiles.from_dir(folder, values["data_events"])]


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
    from auditor.connectors.aws.live import collect_snapshot

    values = locals()
    options = live_options(
        values,
        accounts=tuple(account),
        external_id=external_id,
        trail=trail,
        regions=tuple(r.strip() for r in (regions or "").split(",") if r.strip()),
        athena_workgroup=athena_workgroup,
        access_advisor=access_advisor,
        download_workers=download_workers,
        account_workers=account_workers,
    )
    selector = AgentSelector.from_options(agent_tag, agent, agents_file, all_identities)
    manifest = collect_snapshot(options, out, CollectRequest(days, parse_until(until), selector), tty_progress())
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


def register(app: typer.Typer, collect: typer.Typer) -> None:
    collect.command("aws")(interruptible(collect_aws))
