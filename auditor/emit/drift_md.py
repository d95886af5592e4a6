"""``drift.md``: what changed since the previous audit, for the monthly review (from ``drift.json``)."""

from __future__ import annotations

from typing import Any

from tabulate import tabulate

from auditor.emit.report_md import MAX_LISTED, MAX_ROWS, code, text

HEADERS = ["cloud", "identity", "status", "unused % (before → now)", "+grants", "−grants", "newly used",
           "newly unused", "new destructive", "findings opened", "closed"]  # fmt: skip


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _trend(ident: dict[str, Any]) -> str:
    before, now = ident["unused_percent"]["previous"], ident["unused_percent"]["new"]
    arrow = "" if before is None or now is None else " ▲" if now > before else " ▼" if now < before else ""
    return f"{_percent(before)} → {_percent(now)}{arrow}"


def _row(ident: dict[str, Any], escape: bool) -> list[Any]:
    show = text if escape else str
    return [
        ident["provider"],
        show(ident["name"]),
        ident["status"],
        _trend(ident),
        len(ident["permissions_added"]),
        len(ident["permissions_removed"]),
        len(ident["newly_used"]),
        len(ident["newly_unused"]),
        len(ident["new_destructive"]),
        len(ident["findings_opened"]),
        len(ident["findings_closed"]),
    ]


def _listed(values: list[str]) -> str:
    shown = ", ".join(code(v) for v in values[:MAX_LISTED])
    return shown + (f" … and {len(values) - MAX_LISTED:,} more (drift.json)" if len(values) > MAX_LISTED else "")


def _added(ident: dict[str, Any]) -> list[str]:
    """New grants, by who added them (the grant sources) when the tables say."""
    by_source: dict[str, list[str]] = {}
    for item in ident["permissions_added"]:
        for source in item["sources"] or ["(source not recorded: report.json only)"]:
            by_source.setdefault(source, []).append(item["action"])
    return [f"- New grants from {code(s)}: {_listed(actions)}" for s, actions in sorted(by_source.items())]


def _section(ident: dict[str, Any]) -> list[str]:
    lines = [f"### {text(ident['name'])} ({ident['provider']}, {text(ident['account'])}): {ident['status']}", ""]
    if ident["grant_sources_added"]:
        lines.append(f"- Grant sources added: {_listed(ident['grant_sources_added'])}")
    if ident["grant_sources_removed"]:
        lines.append(f"- Grant sources removed: {_listed(ident['grant_sources_removed'])}")
    lines += _added(ident)
    for name, label in (
        ("permissions_removed", "Grants removed"),
        ("new_destructive", "New destructive grants"),
        ("newly_used", "Newly used"),
        ("newly_unused", "Used before, unused now"),
        ("escalation_opened", "New escalation paths"),
        ("escalation_closed", "Escalation paths gone"),
    ):
        if ident[name]:
            lines.append(f"- {label}: {_listed(ident[name])}")
    for finding in ident["findings_opened"]:
        accepted = " (accepted exception)" if finding["accepted"] else ""
        lines.append(f"- Opened **{finding['severity']}** `{finding['kind']}`{accepted}: {text(finding['title'])}")
    for finding in ident["findings_closed"]:
        lines.append(f"- Closed {finding['severity']} `{finding['kind']}`: {text(finding['title'])}")
    return [*lines, ""]


def render(doc: dict[str, Any]) -> str:
    summary = doc["summary"]
    statuses = ", ".join(f"{count} {status}" for status, count in summary["identities"].items() if count)
    opened = ", ".join(f"{n} {s}" for s, n in summary["findings_opened"].items() if n) or "none"
    closed = ", ".join(f"{n} {s}" for s, n in summary["findings_closed"].items() if n) or "none"
    share = summary["unused_percent"]
    lines = [
        "# Drift since the previous audit",
        "",
        f"- Previous: {text(doc['previous']['origin'])} (generated {doc['previous']['generated_at']})",
        f"- New: {text(doc['new']['origin'])} (generated {doc['new']['generated_at']})",
        f"- Identities: {statuses or 'none'}",
        f"- Unused share of granted permissions: {share['previous']:.1f}% → {share['new']:.1f}%",
        f"- Grants added {summary['permissions_added']:,}, removed {summary['permissions_removed']:,}; newly used "
        f"{summary['newly_used']:,}, newly unused {summary['newly_unused']:,}; new destructive grants "
        f"{summary['new_destructive']:,}",
        f"- Findings opened (not accepted): {opened}; closed: {closed}",
        *(f"- Warning: {text(w)}" for w in doc["warnings"]),
        "",
    ]
    changed = [i for i in doc["identities"] if i["status"] != "unchanged"]
    if not changed:
        return "\n".join([*lines, "Nothing changed.", ""])
    lines += ["## Per identity", "", tabulate([_row(i, True) for i in changed[:MAX_ROWS]], HEADERS, "github"), ""]
    if len(changed) > MAX_ROWS:
        lines += [f"… and {len(changed) - MAX_ROWS:,} more identities in drift.json", ""]
    lines += ["## Details", ""]
    for ident in changed[:MAX_ROWS]:
        lines += _section(ident)
    return "\n".join(lines).rstrip() + "\n"


def terminal(doc: dict[str, Any]) -> str:
    """The short form printed by ``auditor diff`` (plain text, not escaped)."""
    changed = [i for i in doc["identities"] if i["status"] != "unchanged"]
    table = tabulate([_row(i, False) for i in changed[:MAX_ROWS]], HEADERS, "simple") if changed else "no changes"
    summary = doc["summary"]
    opened = ", ".join(f"{n} {s}" for s, n in summary["findings_opened"].items() if n) or "none"
    return f"{table}\n\nfindings opened (not accepted): {opened}"
