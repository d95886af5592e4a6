"""``report.html``: the report as one self-contained page for the deployment review.

Rendered from the ``report.json`` document like ``report.md``: a summary first (per identity
granted / used / unused, its worst finding, a chart of the unused share and, with ``--baseline``,
of last month's), then the findings with filters, then each identity's details. Everything is in
the file (styles, script, SVG charts) and a Content-Security-Policy forbids any fetch, so it opens
the same offline, attached to a ticket, years later. Every value from the input is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

from auditor.emit.report_json import COUNTED_SEVERITIES
from auditor.emit.report_md import MAX_LISTED, MAX_REPORT_CHARS

MAX_FINDINGS = 5000  # rows of the findings table; the rest is in report.json
MAX_CHART = 40  # identities in the unused-share chart
CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1c1e21;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}h3{font-size:15px;margin:0}
.meta{color:#555;margin:0 0 16px}.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #dde;border-radius:8px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:20px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eef;vertical-align:top}
th{background:#eef1f6;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.sev{border-radius:4px;padding:1px 6px;font-size:12px;font-weight:600;color:#fff}
.sev-critical{background:#8b0000}.sev-high{background:#d9480f}.sev-medium{background:#e8a200;color:#222}
.sev-low{background:#5c7cfa}.sev-info{background:#868e96}.sev-none{background:#2b8a3e}
.filters{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0}.filters select,.filters input{padding:4px}
details{background:#fff;border:1px solid #dde;border-radius:8px;margin:8px 0;padding:8px 12px}
summary{cursor:pointer}code{font-size:12px;background:#f1f3f5;padding:0 3px;border-radius:3px;word-break:break-all}
pre{background:#f1f3f5;padding:8px;overflow:auto;font-size:12px}.muted{color:#666}
.accepted{opacity:.6}
"""

SCRIPT = """
(function(){
  var rows=[].slice.call(document.querySelectorAll('#findings tbody tr'));
  var f={severity:document.getElementById('f-severity'),provider:document.getElementById('f-provider'),
         kind:document.getElementById('f-kind'),text:document.getElementById('f-text'),
         accepted:document.getElementById('f-accepted')};
  var rank={info:0,low:1,medium:2,high:3,critical:4};
  function apply(){
    var min=f.severity.value?rank[f.severity.value]:0, shown=0, q=f.text.value.toLowerCase();
    rows.forEach(function(r){
      var ok=rank[r.dataset.severity]>=min&&(!f.provider.value||r.dataset.provider===f.provider.value)
        &&(!f.kind.value||r.dataset.kind===f.kind.value)&&(!q||r.textContent.toLowerCase().indexOf(q)>=0)
        &&(f.accepted.checked||r.dataset.accepted!=='1');
      r.hidden=!ok; if(ok)shown++;
    });
    document.getElementById('f-count').textContent=shown+' of '+rows.length+' findings shown';
  }
  Object.keys(f).forEach(function(k){f[k].addEventListener('input',apply);f[k].addEventListener('change',apply);});
  apply();
})();
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _severity(level: str | None) -> str:
    name = level or "none"
    return f'<span class="sev sev-{_e(name)}">{_e(name)}</span>'


def _worst(ident: dict[str, Any]) -> str | None:
    return next((s for s in COUNTED_SEVERITIES if ident["findings"][s]), None)


def _codes(values: list[str]) -> str:
    shown = " ".join(f"<code>{_e(v)}</code>" for v in values[:MAX_LISTED])
    more = len(values) - MAX_LISTED
    return shown + (f' <span class="muted">… and {more:,} more (report.json)</span>' if more > 0 else "")


def _cards(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    share = 100 * s["unused"] / s["granted"] if s["granted"] else 0.0
    cards = [
        ("identities", f"{s['identities']:,}"),
        ("granted", f"{s['granted']:,}"),
        ("used", f"{s['used']:,}"),
        ("unused", f"{s['unused']:,} ({share:.1f}%)"),
        ("unobservable", f"{s['unobservable']:,}"),
        *((f"{sev} findings", f"{s['findings'][sev]:,}") for sev in COUNTED_SEVERITIES),
    ]
    return '<div class="cards">' + "".join(f'<div class="card"><b>{v}</b>{_e(k)}</div>' for k, v in cards) + "</div>"


def _clipped(name: str, limit: int = 36) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _chart(doc: dict[str, Any]) -> str:
    """Unused share per identity (worst first) as an SVG bar chart; last month's as a thin bar."""
    ranked = sorted(doc["identities"], key=lambda i: (-i["unused_percent"], i["name"]))[:MAX_CHART]
    if not ranked:
        return ""
    previous = {}
    if doc.get("drift"):
        previous = doc["drift"].get("previous_unused", {})
    row, width, label = 22, 420, 260
    bars = []
    for n, ident in enumerate(ranked):
        y = n * row
        share = ident["unused_percent"]
        bars.append(
            f'<text x="{label - 6}" y="{y + 15}" text-anchor="end" font-size="12">{_e(_clipped(ident["name"]))}</text>'
            f'<rect x="{label}" y="{y + 4}" width="{width * share / 100:.1f}" height="12" fill="#d9480f">'
            f"<title>{_e(ident['name'])}: {share:.1f}% unused</title></rect>"
            f'<text x="{label + width * share / 100 + 4:.1f}" y="{y + 15}" font-size="11">{share:.1f}%</text>'
        )
        before = previous.get(f"{ident['provider']}|{ident['identity']}")
        if before is not None:
            bars.append(
                f'<rect class="previous" x="{label}" y="{y + 16}" width="{width * before / 100:.1f}" height="3" '
                f'fill="#5c7cfa"><title>last audit: {before:.1f}% unused</title></rect>'
            )
    height = row * len(ranked)
    legend = " (thin blue bar: the previous audit)" if previous else ""
    return (
        f'<h2>Unused share of granted permissions</h2><p class="muted">Worst {len(ranked)} identities{legend}.</p>'
        f'<svg id="unused-chart" role="img" aria-label="unused share per identity" width="{label + width + 60}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg">{"".join(bars)}</svg>'
    )


def _summary(doc: dict[str, Any]) -> str:
    head = "<tr><th>cloud</th><th>identity</th><th>granted</th><th>used</th><th>unused</th><th>unobservable</th>"
    head += "<th>denied</th><th>worst finding</th></tr>"
    body = "".join(
        f'<tr><td>{_e(i["provider"])}</td><td><a href="#id-{n}">{_e(i["name"])}</a></td>'
        f"<td class=n>{i['granted']:,}</td><td class=n>{i['used']:,}</td>"
        f"<td class=n>{i['unused']:,} ({i['unused_percent']:.1f}%)</td><td class=n>{i['unobservable']:,}</td>"
        f"<td class=n>{i['denied']:,}</td><td>{_severity(_worst(i))}</td></tr>"
        for n, i in enumerate(doc["identities"])
    )
    return f'<h2>Summary</h2><table id="summary"><thead>{head}</thead><tbody>{body}</tbody></table>'


def _drift(doc: dict[str, Any]) -> str:
    if not doc.get("drift"):
        return ""
    summary, previous = doc["drift"]["summary"], doc["drift"]["previous"]
    opened = ", ".join(f"{n} {s}" for s, n in summary["findings_opened"].items() if n) or "none"
    share = summary["unused_percent"]
    items = [
        f"Compared with {_e(previous['origin'])} (generated {_e(previous['generated_at'])}); details in drift.md",
        f"Unused share: {share['previous']:.1f}% → {share['new']:.1f}%",
        f"Grants added {summary['permissions_added']:,}, removed {summary['permissions_removed']:,}; "
        f"new destructive grants {summary['new_destructive']:,}",
        f"New findings (not accepted): {_e(opened)}",
    ]
    return '<h2>Since the previous audit</h2><ul id="drift">' + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _options(values: list[str]) -> str:
    return "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)


def _findings(doc: dict[str, Any]) -> str:
    findings = doc["findings"]
    rows = []
    for f in findings[:MAX_FINDINGS]:
        accepted = (f.get("exception") or {}).get("status") == "accepted"
        note = f' <span class="muted">(accepted: {_e(f["exception"]["reason"])})</span>' if accepted else ""
        rows.append(
            f'<tr data-severity="{_e(f["severity"])}" data-provider="{_e(f["provider"])}" data-kind="{_e(f["kind"])}" '
            f'data-accepted="{1 if accepted else 0}"{" class=accepted" if accepted else ""}>'
            f"<td>{_severity(f['severity'])}</td><td>{_e(f['name'])}</td><td>{_e(f['kind'])}</td>"
            f"<td>{_e(f['title'])}{note}</td></tr>"
        )
    more = len(findings) - MAX_FINDINGS
    filters = (
        '<div class="filters">'
        '<label>at least <select id="f-severity"><option value="">any severity</option>'
        f"{_options(list(COUNTED_SEVERITIES))}</select></label>"
        f'<label>cloud <select id="f-provider"><option value="">all</option>'
        f"{_options(sorted({f['provider'] for f in findings}))}</select></label>"
        f'<label>kind <select id="f-kind"><option value="">all</option>'
        f"{_options(sorted({f['kind'] for f in findings}))}</select></label>"
        '<label>text <input id="f-text" type="search" placeholder="identity, permission, reason"></label>'
        '<label><input id="f-accepted" type="checkbox"> show accepted</label>'
        '<span id="f-count" class="muted"></span></div>'
    )
    table = (
        '<table id="findings"><thead><tr><th>severity</th><th>identity</th><th>finding</th><th>what</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    tail = f'<p class="muted">… and {more:,} more findings in report.json</p>' if more > 0 else ""
    return f"<h2>Findings</h2>{filters}{table}{tail}"


def _identity(n: int, ident: dict[str, Any], findings: list[dict[str, Any]]) -> str:
    used = "".join(
        f"<tr><td><code>{_e(p['action'])}</code></td><td class=n>{p['calls']:,}</td>"
        f"<td>{_e(p['last_seen'])}</td><td>{_e(', '.join(p['evidence']))}</td></tr>"
        for p in ident["used_permissions"][: MAX_LISTED * 5]
    )
    listed = "".join(
        f"<li>{_severity(f['severity'])} <b>{_e(f['kind'])}</b>: {_e(f['title'])}"
        + (f"<br>{_codes(f['actions'])}" if f["actions"] else "")
        + "</li>"
        for f in findings
    )
    plan = "\n".join(ident["apply_commands"])
    parts = [
        f'<details id="id-{n}"><summary><h3 style="display:inline">{_e(ident["name"])}</h3> '
        f'<span class="muted">{_e(ident["provider"])} {_e(ident["account"])}</span> '
        f"{_severity(_worst(ident))}</summary>",
        f"<p><code>{_e(ident['identity'])}</code> ({_e(ident['kind'])}; "
        f"audited because: {_e(ident['selected_by'])})</p>",
        f"<p>Granted by: {_codes(ident['grant_sources'])}</p>",
        f"<p>{ident['granted']:,} granted, {ident['used']:,} used, {ident['unused']:,} unused, "
        f"{ident['unobservable']:,} unobservable, {ident['denied']:,} denied attempts</p>",
    ]
    if used:
        parts.append(
            "<table><thead><tr><th>used permission</th><th>calls</th><th>last seen</th><th>evidence</th></tr></thead>"
            f"<tbody>{used}</tbody></table>"
        )
    if listed:
        parts.append(f"<ul>{listed}</ul>")
    if plan:
        parts.append(f"<p>Least-privilege plan:</p><pre>{_e(plan)}</pre>")
    return "".join(parts) + "</details>"


def _identities(doc: dict[str, Any]) -> str:
    by_identity: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for finding in doc["findings"]:
        by_identity.setdefault((finding["provider"], finding["identity"]), []).append(finding)
    sections, size = [], 0
    for n, ident in enumerate(doc["identities"]):
        section = _identity(n, ident, by_identity.get((ident["provider"], ident["identity"]), []))
        size += len(section)
        if size > MAX_REPORT_CHARS and sections:
            sections.append(f'<p class="muted">… and {len(doc["identities"]) - n:,} more identities in report.json</p>')
            break
        sections.append(section)
    return "<h2>Identities</h2>" + "".join(sections)


def render(doc: dict[str, Any]) -> str:
    windows = "; ".join(f"{_e(p)}: {_e(w['start'])} → {_e(w['end'])}" for p, w in sorted(doc["windows"].items()))
    worst = doc["summary"]["worst_severity"]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Permission scope audit {_e(doc['generated_at'])}</title><style>{STYLE}</style></head><body><main>"
        f'<h1>Permission scope audit</h1><p class="meta">Generated {_e(doc["generated_at"])} by auditor '
        f"{_e(doc['tool']['version'])}. Windows: {windows}. Worst finding: {_severity(worst)}</p>"
        f"{_cards(doc)}{_drift(doc)}{_chart(doc)}{_summary(doc)}{_findings(doc)}{_identities(doc)}"
        f"</main><script>{SCRIPT}</script></body></html>\n"
    )
