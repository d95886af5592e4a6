"""``auditor approvals``: the human side of the approval queue (list, show, approve, deny, watch).

Every command takes ``--queue PATH|URL`` (default ``$AUDITOR_APPROVALS``, else the user's state
folder; see :func:`auditor.approvals.default_location`). Queue problems (unknown id, unreachable
database, a request someone already decided) are one line and exit 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from auditor.cli.options import interruptible
from auditor.errors import AuditorError
from auditor.timefmt import iso

if TYPE_CHECKING:
    from auditor.approvals import ApprovalQueue, ApprovalRequest

app = typer.Typer(
    no_args_is_help=True,
    help="The human approval queue: calls the guard holds for a decision (list, show, approve, deny, watch).",
)

Queue = Annotated[
    str | None,
    typer.Option(
        "--queue",
        envvar="AUDITOR_APPROVALS",
        metavar="PATH|URL",
        help="The queue: a SQLite file, sqlite:///PATH or postgresql://... "
        "[default: $AUDITOR_APPROVALS, else ~/.local/state/auditor/approvals.db]",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
Note = Annotated[str | None, typer.Option(help="Why: stored with the decision and shown to the agent's operator.")]
Approver = Annotated[str | None, typer.Option("--as", help="Who decides [default: $USER@host].", show_default=False)]


class StatusChoice(StrEnum):
    pending = "pending"
    approved = "approved"
    denied = "denied"
    expired = "expired"


class ApprovalError(AuditorError):
    """The approval queue could not answer (bad URL, unreachable database, unknown or decided request)."""


@contextlib.contextmanager
def opened(location: str | None) -> Iterator[ApprovalQueue]:
    """The queue at ``location``, closed afterwards; its errors as one-line :class:`ApprovalError`."""
    from auditor.approvals import QueueError, open_queue

    try:
        queue = open_queue(location)
    except QueueError as exc:
        raise ApprovalError(str(exc)) from None
    try:
        yield queue
    except QueueError as exc:
        raise ApprovalError(str(exc)) from None
    finally:
        queue.close()


def duration(seconds: float) -> str:
    """``45s``, ``12m``, ``3h 5m``, ``2d 4h``: short enough for a table column."""
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(seconds // 3600, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def expiry(request: ApprovalRequest, now: datetime) -> str:
    if request.status != "pending":
        return "-"
    return duration((request.expires - now).total_seconds())


def as_dict(request: ApprovalRequest) -> dict[str, Any]:
    """The request as JSON-ready values (times ISO-8601 UTC)."""
    return {
        key: iso(value) if isinstance(value, datetime) else value for key, value in dataclasses.asdict(request).items()
    }


def default_approver() -> str:
    user = os.environ.get("USER") or getpass.getuser()
    return f"{user}@{socket.gethostname()}"


@app.command("list")
@interruptible
def list_command(
    queue: Queue = None,
    every: Annotated[bool, typer.Option("--all", help="Every request, decided and expired too.")] = False,
    status: Annotated[StatusChoice | None, typer.Option(help="Only requests in this state [default: pending].")] = None,
    as_json: AsJson = False,
) -> None:
    """The requests waiting for a decision (or --all / --status): id, age, identity, target, rule, expiry."""
    if every and status is not None:
        raise ApprovalError("--all and --status exclude each other (choose one)")
    wanted = None if every else (status.value if status else "pending")
    with opened(queue) as approvals:
        requests = approvals.list(wanted)  # type: ignore[arg-type]
    if as_json:
        typer.echo(json.dumps([as_dict(r) for r in requests], indent=2))
        return
    if not requests:
        typer.echo(f"no {wanted or ''} approval requests".replace("  ", " "))
        return
    from tabulate import tabulate

    now = datetime.now(UTC)
    headers = ["id", *([] if wanted == "pending" else ["status"]), "age", "identity", "target", "rule", "expires in"]
    rows = [
        [
            r.id,
            *([] if wanted == "pending" else [r.status]),
            duration((now - r.created).total_seconds()),
            r.identity,
            r.target if r.resource is None else f"{r.target} on {r.resource}",
            r.rule,
            expiry(r, now),
        ]
        for r in requests
    ]
    typer.echo(tabulate(rows, headers=headers, tablefmt="simple"))


def describe(request: ApprovalRequest) -> str:
    """Every field of one request, one per line, the (redacted) parameters as indented JSON."""
    now = datetime.now(UTC)
    if request.status == "pending":
        state = f"pending (expires in {duration((request.expires - now).total_seconds())})"
    elif request.status == "expired":
        state = f"expired unanswered at {iso(request.decided_at or request.expires)}"
    else:
        state = f"{request.status} by {request.decided_by} at {iso(request.decided_at)}"
    lines = [
        ("id", request.id),
        ("status", state),
        ("identity", request.identity),
        ("kind", request.kind),
        ("target", request.target),
        ("resource", request.resource or "-"),
        ("rule", request.rule),
        ("reason", request.reason),
        ("requester", request.requester),
        ("created", iso(request.created)),
        ("expires", iso(request.expires)),
        *([("note", request.note)] if request.note else []),
    ]
    params = json.dumps(request.params, indent=2, sort_keys=True).replace("\n", "\n  ")
    return "\n".join(f"{name + ':':<11}{value}" for name, value in lines) + f"\nparams:\n  {params}"


@app.command("show")
@interruptible
def show_command(
    request_id: Annotated[str, typer.Argument(metavar="ID", help="The request id (from `auditor approvals list`).")],
    queue: Queue = None,
    as_json: AsJson = False,
) -> None:
    """Everything about one request: identity, target, redacted parameters, rule, reason, decision."""
    with opened(queue) as approvals:
        request = approvals.get(request_id)
    typer.echo(json.dumps(as_dict(request), indent=2) if as_json else describe(request))


def decide(location: str | None, request_id: str, approve: bool, note: str | None, approver: str | None) -> None:
    with opened(location) as approvals:
        request = approvals.decide(request_id, approve, approver=approver or default_approver(), note=note)
    typer.echo(f"{request.status} {request.id}: {request.identity} {request.target} (by {request.decided_by})")


@app.command("approve")
@interruptible
def approve_command(
    request_id: Annotated[str, typer.Argument(metavar="ID", help="The request to approve.")],
    note: Note = None,
    approver: Approver = None,
    queue: Queue = None,
) -> None:
    """Let the held call run. A request already decided or expired is left as it is (exit 2)."""
    decide(queue, request_id, True, note, approver)


@app.command("deny")
@interruptible
def deny_command(
    request_id: Annotated[str, typer.Argument(metavar="ID", help="The request to deny.")],
    note: Note = None,
    approver: Approver = None,
    queue: Queue = None,
) -> None:
    """Refuse the held call. A request already decided or expired is left as it is (exit 2)."""
    decide(queue, request_id, False, note, approver)


def headline(request: ApprovalRequest) -> str:
    on = f" on {request.resource}" if request.resource else ""
    left = duration((request.expires - datetime.now(UTC)).total_seconds())
    what = f"{request.kind} {request.target}{on}"
    return f"{request.id}  {request.identity}  {what}  [{request.rule}] {request.reason}  (expires in {left})"


def ask(approvals: ApprovalQueue, request: ApprovalRequest, approver: str) -> bool:
    """One interactive decision: a(pprove), d(eny) or s(kip). False when the input has ended."""
    from auditor.approvals import QueueError

    typer.echo("  approve, deny or skip? [a/d/S] ", nl=False)
    answer = sys.stdin.readline()
    if not answer:
        typer.echo("")
        return False
    choice = answer.strip().lower()[:1]
    if choice in ("a", "d"):
        try:
            decided = approvals.decide(request.id, choice == "a", approver=approver)
            typer.echo(f"  {decided.status} {decided.id}")
        except QueueError as exc:
            typer.echo(f"  {exc}", err=True)
    return True


@app.command("watch")
@interruptible
def watch_command(
    queue: Queue = None,
    interactive: Annotated[
        bool | None,
        typer.Option(
            "--interactive/--no-interactive",
            help="Ask approve/deny for each new request [default: when stdin is a terminal].",
            show_default=False,
        ),
    ] = None,
    approver: Approver = None,
    interval: Annotated[float, typer.Option(help="Seconds between looks at the queue.", min=0.05)] = 0.5,
) -> None:
    """Print each new pending request as it arrives (Ctrl-C stops, exit 130)."""
    prompting = sys.stdin.isatty() if interactive is None else interactive
    who = approver or default_approver()
    seen: set[str] = set()
    with opened(queue) as approvals:
        typer.echo(f"watching {approvals.url} for approval requests (Ctrl-C to stop)", err=True)
        while True:
            for request in approvals.list("pending"):
                if request.id in seen:
                    continue
                seen.add(request.id)
                typer.echo(headline(request))
                sys.stdout.flush()
                if prompting:
                    prompting = ask(approvals, request, who)
            time.sleep(interval)
