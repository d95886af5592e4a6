"""``report.md``: the report a human attaches to a deployment review, and the terminal summary.

Both are rendered from the ``report.json`` document so they always agree with it. Every value that
comes from the input (identity, event, resource and policy names, reasons quoting them) is escaped:
nothing in an input can add a heading, a link or raw HTML to the review. The report summarises at
scale (the worst identities first, each list and the whole report under a size cap); the complete
detail is in ``report.json``, ``permissions.csv`` and ``permissions.parquet``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from auditor.emit.report_json import COUNTED_SEVERITIES

MAX_LISTED = 40
MAX_REASONS = 6
MAX_ROWS = 300  # rows of any one table
MAX_REPORT_CHARS = 2_000_000  # identity sections stop here; the rest is in report.json

_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~&])")
_SPACE = re.compile(r"\s+")


def text(value: Any) -> str:
    """Input text as inert Markdown: one line, every Markdown/HTML character escaped."""
    return _SPECIAL.sub(r"\\\1", _SPACE.sub(" ", str(value)).strip())


def code(value: Any) -> str:
    """Input text as an inline code span that nothing inside can end (nor a table cell)."""
    flat = _SPACE.sub(" ", str(value)).strip().replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {flat} {fence}" if longest else f"`{flat}`"


def _short(values: Sequence[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(code(v) for v in values[:limit])
    return shown + (f" … and {len(values) - limit:,} more (see report.json)" if len(values) > limit else "")


def _rank(ident: dict[str, Any]) -> tuple[int, ...]:
    counts = ident["findings"]
    return (*tuple(-counts[s] for s in COUNTED_SEVERITIES), -ident["unused"])


def summary_rows(identities: Sequence[dict[str, Any]], escape: bool = True) -> list[list[Any]]:
    show = text if escape else str
    rows = []
    for ident in identities:
        counts = ident["findings"]
        rows.append(
            [
                ident["provider"],
                show(ident["name"]),
                ident["granted"],
                ident["used"],
                f"{ident['unused_percent']:.1f}%",
                ident["unobservable"],
                ident["denied"],
                *(counts[s] for s in COUNTED_SEVERITIES[:4]),
            ]
        )
    return rows


SUMMARY_HEADERS = [
    "cloud",
    "identity",
    "granted",
    "used",
    "unused",
    "unobservable",
    "denied",
    "critical",
    "high",
    "medium",
    "low",
]


def terminal_summary(doc: dict[str, Any], out_dir: str) -> str:
    ranked = sorted(doc["identities"], key=_rank)
    lines = [tabulate(summary_rows(ranked[:MAX_ROWS], escape=False), headers=SUMMARY_HEADERS, tablefmt="simple")]
    if len(ranked) > MAX_ROWS:
        lines.append(f"… and {len(ranked) - MAX_ROWS:,} more identities (report.md, report.json)")
    counts = doc["summary"]["findings"]
    lines.append("")
    lines.append(
        "findings: " + ", ".join(f"{counts[s]} {s}" for s in COUNTED_SEVERITIES if counts[s])
        if any(counts.values())
        else "findings: none"
    )
    gaps = doc["gaps"]
    if gaps:
        lines.append(f"input problems: {len(gaps)} (listed in {out_dir}/report.md under 'Input problems')")
    lines.append(
        f"wrote {out_dir}/report.md, report.html, report.json, report.sarif, blocklist.yaml, permissions.csv, "
        f"permissions.parquet{', drift.md, drift.json' if doc.get('drift') else ''} and "
        f"{sum(len(i['policy_files']) for i in doc['identities'])} policy file(s) under {out_dir}/policies/"
    )
    return "\n".join(lines)


def _header(doc: dict[str, Any]) -> list[str]:
    summary = doc["summary"]
    worst = summary["worst_severity"] or "none"
    windows = [
        f"- Window ({provider}): {w['start']} → {w['end']} ({w['days']} days; ends at {text(w['basis'])})"
        for provider, w in sorted(doc["windows"].items())
    ]
    return [
        "# Permission scope audit",
        "",
        f"- Generated: {doc['generated_at']} by auditor {doc['tool']['version']}",
        *windows,
        f"- Agent identities audited: {summary['identities']} (dormant: {summary['agents_dormant']})",
        f"- Worst finding: **{worst}**",
        f"- Catalogs: {', '.join(f'{k}: {text(v)}' for k, v in doc['catalogs'].items())}",
        f"- Inputs: {_short(doc['inputs'], 20)}",
        "",
        "Evidence states: **used** (a call passed the permission check), **denied** (attempted, refused by "
        "authorization), **unused** (the logs cover it for the whole window and show no call), **unobservable** "
        "(the logs cannot show it; kept in the least-privilege policy and listed, never called unused).",
        "",
    ]


def _table(rows: list[list[Any]], headers: list[str], total: int, what: str) -> list[str]:
    lines = [tabulate(rows, headers=headers, tablefmt="github")]
    if total > len(rows):
        lines.append(f"\n… and {total - len(rows):,} more {what} in report.json")
    return [*lines, ""]


def _summary(doc: dict[str, Any]) -> list[str]:
    ranked = sorted(doc["identities"], key=_rank)
    return ["## Summary", "", *_table(summary_rows(ranked[:MAX_ROWS]), SUMMARY_HEADERS, len(ranked), "identities")]


def _is_accepted(finding: dict[str, Any]) -> bool:
    return (finding.get("exception") or {}).get("status") == "accepted"


def _drift(doc: dict[str, Any]) -> list[str]:
    """Since the previous audit (the detail is in drift.md)."""
    if not doc.get("drift"):
        return []
    summary, previous = doc["drift"]["summary"], doc["drift"]["previous"]
    opened = ", ".join(f"{n} {s}" for s, n in summary["findings_opened"].items() if n) or "none"
    statuses = ", ".join(f"{n} {s}" for s, n in summary["identities"].items() if n and s != "unchanged")
    return [
        "## Since the previous audit",
        "",
        f"- Compared with {text(previous['origin'])} (generated {previous['generated_at']}); details in drift.md",
        f"- Identities: {statuses or 'no changes'}",
        f"- Unused share: {summary['unused_percent']['previous']:.1f}% → {summary['unused_percent']['new']:.1f}%",
        f"- Grants added {summary['permissions_added']:,}, removed {summary['permissions_removed']:,}; "
        f"new destructive grants {summary['new_destructive']:,}",
        f"- New findings (not accepted): {opened}",
        "",
    ]


def _findings_table(doc: dict[str, Any]) -> list[str]:
    shown = [f for f in doc["findings"] if f["severity"] != "info" and not _is_accepted(f)]
    if not shown:
        return ["## Findings", "", "No findings above info.", ""]
    rows = [[f["severity"], text(f["name"]), f["kind"], text(f["title"])] for f in shown[:MAX_ROWS]]
    return ["## Findings", "", *_table(rows, ["severity", "identity", "finding", "what"], len(shown), "findings")]


def _exceptions(doc: dict[str, Any]) -> list[str]:
    """Accepted findings, and the entries of the exceptions file that expired or matched nothing."""
    entries = doc.get("exceptions") or []
    if not entries:
        return []
    lines = ["## Accepted exceptions", ""]
    accepted = [f for f in doc["findings"] if _is_accepted(f)]
    if accepted:
        rows = [
            [f["severity"], text(f["name"]), f["kind"], text(f["exception"]["reason"]), f["exception"]["expires"]]
            for f in accepted[:MAX_ROWS]
        ]
        lines += _table(rows, ["severity", "identity", "finding", "accepted because", "until"], len(accepted), "")
    stale = [e for e in entries if e["status"] != "active"]
    lines += [
        f"- {text(e['entry'])} ({text(e['identity'])}): "
        + (
            f"**expired** on {e['expires']}; its findings are open again"
            if e["status"] == "expired"
            else "matched no finding"
        )
        for e in stale[:MAX_ROWS]
    ]
    return [*lines, ""]


def _used_table(ident: dict[str, Any]) -> list[str]:
    used = ident["used_permissions"]
    if not used:
        return []
    rows = [
        [
            code(p["action"]),
            p["calls"],
            p["last_seen"],
            ", ".join(p["evidence"]),
            _short(p["resources_seen"], 3) if p["resources_seen"] else "",
            "yes" if p["destructive"] else "",
            "" if p["granted"] else "not granted",
        ]
        for p in used[:MAX_ROWS]
    ]
    headers = ["permission", "calls", "last used", "evidence", "resources", "destructive", ""]
    return ["Used in the window:", "", *_table(rows, headers, len(used), "used permissions")]


def _block(commands: Sequence[str]) -> list[str]:
    """Commands in a fenced block that no command can close early."""
    flat = [_SPACE.sub(" ", c) for c in commands]
    longest = max((len(run) for c in flat for run in re.findall(r"`+", c)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}sh", *flat, fence]


def _plan(ident: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if ident["apply_commands"]:
        title = "Plan (dormant: remove every grant):" if ident["dormant"] else "Least-privilege plan:"
        lines += ["", title, "", *_block(ident["apply_commands"])]
    if ident["exception_commands"]:
        lines += [
            "",
            "Only if the agent must keep what the logs cannot show:",
            "",
            *_block(ident["exception_commands"]),
        ]
    if ident["kept_unobservable"] and not ident["dormant"]:
        lines.append(
            f"\n{ident['kept_unobservable']:,} unobservable permission(s) kept in it "
            "(`--drop-unobservable` drops them)."
        )
    if ident["policy_note"]:
        lines += ["", f"Note: {text(ident['policy_note'])}"]
    if ident["policy_alternative"]:
        lines += ["", f"Alternative: {text(ident['policy_alternative'])}."]
    return lines


def _identity_section(ident: dict[str, Any], findings: Sequence[dict[str, Any]]) -> list[str]:
    blind = ident["coverage"]["unobservable"]
    lines = [
        f"### {text(ident['name'])} ({ident['provider']}, {text(ident['account'])})",
        "",
        f"- Identity: {code(ident['identity'])} ({text(ident['kind'])}; audited because: {text(ident['selected_by'])})",
        f"- Granted by: {_short(ident['grant_sources'], 10) or 'nothing'}",
        f"- Evidence: {', '.join(text(s) for s in ident['coverage']['sources']) or 'no log source'}; use proven by "
        f"{', '.join(ident['coverage']['evidence']) or 'nothing'}",
        *(f"- Cannot show {b['permissions']:,} of its permissions: {text(b['reason'])}" for b in blind[:MAX_REASONS]),
        *([f"- … and {len(blind) - MAX_REASONS} more reasons (see report.json)"] if len(blind) > MAX_REASONS else []),
        f"- {ident['granted']:,} permissions granted, {ident['used']:,} used, {ident['unused']:,} unused "
        f"({ident['unused_percent']:.1f}%), {ident['unobservable']:,} unobservable, "
        f"{ident['denied']:,} denied attempts",
        "",
        *_used_table(ident),
    ]
    for finding in findings:
        lines.append(f"- **{finding['severity']}** `{finding['kind']}`: {text(finding['title'])}")
        if exception := finding.get("exception"):
            state = "accepted" if exception["status"] == "accepted" else "exception expired"
            lines.append(f"  - {state} until {exception['expires']}: {text(exception['reason'])}")
        if finding["detail"]:
            lines.append(f"  - {text(finding['detail'])}")
        if finding["actions"]:
            lines.append(f"  - {_short(finding['actions'])}")
    lines += _plan(ident)
    if ident["notes"]:
        lines += ["", *(f"- {text(note)}" for note in ident["notes"])]
    return [*lines, ""]


def _identities(doc: dict[str, Any]) -> list[str]:
    by_identity: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for finding in doc["findings"]:
        by_identity.setdefault((finding["provider"], finding["identity"]), []).append(finding)
    lines, size = ["## Identities", ""], 0
    ranked = sorted(doc["identities"], key=_rank)
    for shown, ident in enumerate(ranked):
        section = _identity_section(ident, by_identity.get((ident["provider"], ident["identity"]), []))
        size += sum(len(line) + 1 for line in section)
        if size > MAX_REPORT_CHARS and shown:
            lines += [f"… and {len(ranked) - shown:,} more identities: see report.json and permissions.csv", ""]
            break
        lines += section
    return lines


def _not_audited(doc: dict[str, Any]) -> list[str]:
    if not doc["not_audited"]:
        return []
    rows = [
        [i["provider"], text(i["account"]), code(i["identity"]), text(i["kind"]), text(i["selected_by"])]
        for i in doc["not_audited"][:MAX_ROWS]
    ]
    headers = ["cloud", "account / project", "identity", "kind", "why"]
    return ["## Reported, not audited", "", *_table(rows, headers, len(doc["not_audited"]), "identities")]


def _coverage(doc: dict[str, Any]) -> list[str]:
    lines = ["## Evidence coverage", ""]
    if doc["coverage"]:
        rows = [
            [
                c["provider"],
                text(c["account"]),
                text(c["source"]),
                c["first_event"],
                c["last_event"],
                c["days_with_events"],
                c["events_read"],
                c["events_in_window"],
                c["files_read"],
            ]
            for c in doc["coverage"][:MAX_ROWS]
        ]
        headers = [
            "cloud",
            "account / project",
            "source",
            "first event",
            "last event",
            "days with events",
            "events read",
            "in window",
            "files",
        ]
        lines += _table(rows, headers, len(doc["coverage"]), "coverage rows")
        lines += [f"- {text(c['account'])}: {text(c['detail'])}" for c in doc["coverage"][:MAX_ROWS] if c["detail"]]
    reasons = sorted({(o["provider"], o["account"], o["reason"]) for o in doc["observability"]})
    if reasons:
        lines += ["", "What the evidence cannot show (such permissions are **unobservable**, never unused):", ""]
        lines += [f"- {p} {text(a)}: {text(r)}" for p, a, r in reasons[:MAX_ROWS]]
    return [*lines, ""]


def _unmapped(doc: dict[str, Any]) -> list[str]:
    if not doc["unmapped"]:
        return []
    rows = [[code(u["event"]), u["calls"], code(u["identity"]), text(u["reason"])] for u in doc["unmapped"][:100]]
    return [
        "## Calls not mapped to a permission",
        "",
        "Counted, not guessed: these calls are not part of any used set.",
        "",
        *_table(rows, ["event", "calls", "identity", "reason"], len(doc["unmapped"]), "unmapped calls"),
    ]


def _gaps(doc: dict[str, Any]) -> list[str]:
    if not doc["gaps"]:
        return ["## Input problems", "", "None: every input was read.", ""]
    rows = [[g["severity"], code(g["scope"]), text(g["reason"]), g["count"]] for g in doc["gaps"][:MAX_ROWS]]
    return [
        "## Input problems",
        "",
        "What could not be read (the audit used everything else; `--strict` makes these fatal):",
        "",
        *_table(rows, ["severity", "where", "problem", "count"], len(doc["gaps"]), "input problems"),
    ]


def render(doc: dict[str, Any]) -> str:
    lines = [*_header(doc), *_drift(doc), *_summary(doc), *_findings_table(doc), *_exceptions(doc)]
    lines += _identities(doc)
    lines += [*_not_audited(doc), *_coverage(doc), *_unmapped(doc), *_gaps(doc)]
    return "\n".join(lines).rstrip() + "\n"
