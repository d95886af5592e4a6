"""``report.md``: the report a human attaches to a deployment review, and the terminal summary.

Both are rendered from the ``report.json`` document so they always agree with it.
"""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from auditor.emit.report_json import COUNTED_SEVERITIES

MAX_LISTED = 40
MAX_REASONS = 6


def _short(values: list[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(f"`{v}`" for v in values[:limit])
    return shown + (f" … and {len(values) - limit:,} more (see report.json)" if len(values) > limit else "")


def summary_rows(doc: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for ident in doc["identities"]:
        counts = ident["findings"]
        rows.append(
            [
                ident["provider"],
                ident["name"],
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
    lines = [tabulate(summary_rows(doc), headers=SUMMARY_HEADERS, tablefmt="simple")]
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
        f"wrote {out_dir}/report.md, report.json, blocklist.yaml, permissions.csv and "
        f"{sum(len(i['policy_files']) for i in doc['identities'])} policy file(s) under {out_dir}/policies/"
    )
    return "\n".join(lines)


def _header(doc: dict[str, Any]) -> list[str]:
    window = doc["window"] or {}
    summary = doc["summary"]
    worst = summary["worst_severity"] or "none"
    return [
        "# Permission scope audit",
        "",
        f"- Generated: {doc['generated_at']} by auditor {doc['tool']['version']}",
        f"- Window: {window.get('start')} → {window.get('end')} ({window.get('days')} days)",
        f"- Agent identities audited: {summary['identities']} (dormant: {summary['agents_dormant']})",
        f"- Worst finding: **{worst}**",
        f"- Catalogs: {', '.join(f'{k}: {v}' for k, v in doc['catalogs'].items())}",
        f"- Inputs: {', '.join(f'`{s}`' for s in doc['inputs'])}",
        "",
        "Evidence states: **used** (a call passed the permission check), **denied** (attempted, refused by "
        "authorization), **unused** (the logs cover it for the whole window and show no call), **unobservable** "
        "(the logs cannot show it; kept in the least-privilege policy and listed, never called unused).",
        "",
    ]


def _summary(doc: dict[str, Any]) -> list[str]:
    return ["## Summary", "", tabulate(summary_rows(doc), headers=SUMMARY_HEADERS, tablefmt="github"), ""]


def _findings_table(doc: dict[str, Any]) -> list[str]:
    rows = [[f["severity"], f["name"], f["kind"], f["title"]] for f in doc["findings"] if f["severity"] != "info"]
    if not rows:
        return ["## Findings", "", "No findings above info.", ""]
    return [
        "## Findings",
        "",
        tabulate(rows, headers=["severity", "identity", "finding", "what"], tablefmt="github"),
        "",
    ]


def _identity_section(doc: dict[str, Any], ident: dict[str, Any]) -> list[str]:
    lines = [
        f"### {ident['name']} ({ident['provider']}, {ident['account']})",
        "",
        f"- Identity: `{ident['identity']}` ({ident['kind']}; audited because: {ident['selected_by']})",
        f"- Granted by: {_short(ident['grant_sources'], 10) or 'nothing'}",
        f"- Evidence: {', '.join(ident['coverage']['sources']) or 'no log source'}; use proven by "
        f"{', '.join(ident['coverage']['evidence']) or 'nothing'}",
        *(
            f"- Cannot show {blind['permissions']:,} of its permissions: {blind['reason']}"
            for blind in ident["coverage"]["unobservable"][:MAX_REASONS]
        ),
        *(
            [f"- … and {len(ident['coverage']['unobservable']) - MAX_REASONS} more reasons (see report.json)"]
            if len(ident["coverage"]["unobservable"]) > MAX_REASONS
            else []
        ),
        f"- {ident['granted']:,} permissions granted, {ident['used']:,} used, {ident['unused']:,} unused "
        f"({ident['unused_percent']:.1f}%), {ident['unobservable']:,} unobservable, "
        f"{ident['denied']:,} denied attempts",
        "",
    ]
    if ident["used_permissions"]:
        rows = [
            [
                p["action"],
                p["calls"],
                p["last_seen"],
                ", ".join(p["evidence"]),
                _short(p["resources_seen"], 3) if p["resources_seen"] else "",
                "yes" if p["destructive"] else "",
                "" if p["granted"] else "not granted",
            ]
            for p in ident["used_permissions"]
        ]
        lines += [
            "Used in the window:",
            "",
            tabulate(
                rows,
                headers=["permission", "calls", "last used", "evidence", "resources", "destructive", ""],
                tablefmt="github",
            ),
            "",
        ]
    findings = [f for f in doc["findings"] if f["provider"] == ident["provider"] and f["identity"] == ident["identity"]]
    for finding in findings:
        lines.append(f"- **{finding['severity']}** `{finding['kind']}`: {finding['title']}")
        if finding["detail"]:
            lines.append(f"  - {finding['detail']}")
        if finding["actions"]:
            lines.append(f"  - {_short(finding['actions'])}")
    if ident["policy_files"]:
        lines += ["", "Least-privilege policy:", ""]
        lines += [f"    {command}" for command in ident["apply_commands"]]
        if ident["kept_unobservable"]:
            lines.append(
                f"\n{ident['kept_unobservable']:,} unobservable permission(s) kept in it "
                "(`--drop-unobservable` drops them)."
            )
    if ident["policy_note"]:
        lines += ["", f"Note: {ident['policy_note']}"]
    if ident["policy_alternative"]:
        lines += ["", f"Alternative: {ident['policy_alternative']}."]
    if ident["notes"]:
        lines += ["", *(f"- {note}" for note in ident["notes"])]
    return [*lines, ""]


def _not_audited(doc: dict[str, Any]) -> list[str]:
    if not doc["not_audited"]:
        return []
    rows = [[i["provider"], i["account"], i["identity"], i["kind"], i["selected_by"]] for i in doc["not_audited"]]
    return [
        "## Reported, not audited",
        "",
        tabulate(rows, headers=["cloud", "account / project", "identity", "kind", "why"], tablefmt="github"),
        "",
    ]


def _coverage(doc: dict[str, Any]) -> list[str]:
    lines = ["## Evidence coverage", ""]
    if doc["coverage"]:
        rows = [
            [
                c["provider"],
                c["account"],
                c["source"],
                c["first_event"],
                c["last_event"],
                c["days_with_events"],
                c["events_read"],
                c["events_in_window"],
                c["files_read"],
            ]
            for c in doc["coverage"]
        ]
        lines += [
            tabulate(
                rows,
                headers=[
                    "cloud",
                    "account / project",
                    "source",
                    "first event",
                    "last event",
                    "days with events",
                    "events read",
                    "in window",
                    "files",
                ],
                tablefmt="github",
            ),
            "",
        ]
        lines += [f"- {c['account']}: {c['detail']}" for c in doc["coverage"] if c["detail"]]
    reasons = sorted({(o["provider"], o["account"], o["reason"]) for o in doc["observability"]})
    if reasons:
        lines += ["", "What the evidence cannot show (such permissions are **unobservable**, never unused):", ""]
        lines += [f"- {p} {a}: {r}" for p, a, r in reasons]
    return [*lines, ""]


def _unmapped(doc: dict[str, Any]) -> list[str]:
    if not doc["unmapped"]:
        return []
    rows = [[u["event"], u["calls"], u["identity"], u["reason"]] for u in doc["unmapped"][:100]]
    more = len(doc["unmapped"]) - 100
    return [
        "## Calls not mapped to a permission",
        "",
        "Counted, not guessed: these calls are not part of any used set.",
        "",
        tabulate(rows, headers=["event", "calls", "identity", "reason"], tablefmt="github"),
        *([f"\n… and {more} more in report.json"] if more > 0 else []),
        "",
    ]


def _gaps(doc: dict[str, Any]) -> list[str]:
    if not doc["gaps"]:
        return ["## Input problems", "", "None: every input was read.", ""]
    rows = [[g["severity"], g["scope"], g["reason"], g["count"]] for g in doc["gaps"][:200]]
    return [
        "## Input problems",
        "",
        "What could not be read (the audit used everything else; `--strict` makes these fatal):",
        "",
        tabulate(rows, headers=["severity", "where", "problem", "count"], tablefmt="github"),
        "",
    ]


def render(doc: dict[str, Any]) -> str:
    lines = [*_header(doc), *_summary(doc), *_findings_table(doc), "## Identities", ""]
    for ident in doc["identities"]:
        lines += _identity_section(doc, ident)
    lines += [*_not_audited(doc), *_coverage(doc), *_unmapped(doc), *_gaps(doc)]
    return "\n".join(lines).rstrip() + "\n"
