"""Write every output of one audit into ``--out``, published as one set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl

from auditor import drift
from auditor.emit import blocklist, drift_md, report_html, report_json, report_md, sarif
from auditor.emit.base import IdentityPolicies, all_policies, json_text
from auditor.publish import FileWriter, OutputSet

if TYPE_CHECKING:
    from auditor.audit import AuditResult


def _permissions_csv(frame: pl.DataFrame) -> FileWriter:
    def write(path: Path) -> None:
        lists = [c for c, t in frame.schema.items() if isinstance(t, pl.List)]
        flat = frame.with_columns(joined(c) for c in lists)
        flat.write_csv(path, datetime_format="%Y-%m-%dT%H:%M:%SZ")

    return write


def joined(column: str) -> pl.Expr:
    """``list.join(";")`` of a list column, written out for the lists of no item or one (nearly every row:
    most permissions have one grant source, no evidence and no resources): polars skips a branch no row
    takes, and joining 180,000 short lists costs ~15 ms each time."""
    items = pl.col(column)
    return (
        pl.when(items.list.len() == 0)
        .then(pl.lit(""))
        .when(items.list.len() == 1)
        .then(items.list.first().fill_null(""))
        .otherwise(items.list.join(";"))
        .alias(column)
    )


def _parquet(frame: pl.DataFrame) -> FileWriter:
    return lambda path: frame.write_parquet(path, compression="zstd")


def _policy_index(policies: list[IdentityPolicies]) -> str:
    entries = [
        {
            "provider": p.provider,
            "account": p.account,
            "identity": p.identity,
            "name": p.name,
            "folder": p.folder,
            "files": [f.path for f in p.files],
            "apply": p.apply,
            "exceptions": p.exceptions,
            "dormant": p.dormant,
            "note": p.note,
            "alternative": p.alternative,
            "kept_unobservable": p.kept_unobservable,
            "enforce": p.enforce,
            "enforce_note": p.enforce_note,
        }
        for p in policies
    ]
    return json_text(entries)


def write_outputs(
    result: AuditResult,
    out: Path | OutputSet,
    previous: drift.Audit | None = None,
    iac: Sequence[sarif.IacLocation] = (),
) -> dict[str, Any]:
    """Write policies, blocklist, permissions.csv and the reports; return the report document. With
    ``previous`` (last month's audit) also ``drift.json`` and ``drift.md``, summarised in the reports;
    ``iac`` places the SARIF results on the files where each identity's IAM is defined. ``out``: the
    folder, published here; or an open :class:`OutputSet` (taken before the audit), published by its
    owner when its ``with`` block ends."""
    if isinstance(out, OutputSet):
        return _write(result, out, previous, iac)
    with OutputSet(out) as staged:
        return _write(result, staged, previous, iac)


def _write(
    result: AuditResult, staged: OutputSet, previous: drift.Audit | None, iac: Sequence[sarif.IacLocation]
) -> dict[str, Any]:
    out = staged.out
    # The two largest outputs first: polars writes them itself, on threads, while the rest is rendered.
    staged.write_in_background("permissions.csv", _permissions_csv(result.permissions))
    staged.write_in_background("permissions.parquet", _parquet(result.permissions))
    policies = all_policies(result)
    for entry in policies:
        for policy_file in entry.files:
            staged.write(policy_file.path, policy_file.content)
    staged.write("policies/index.json", _policy_index(policies))
    staged.write("blocklist.yaml", blocklist.render(blocklist.blocklist(result)))
    extra = ["report.sarif", "report.html", *(["drift.json", "drift.md"] if previous is not None else [])]
    document = report_json.report(result, policies, [*staged.written, *extra, "report.json", "report.md"])
    if previous is not None:
        changes = drift.drift(previous, drift.of_result(document, result.permissions, str(out)))
        staged.write("drift.json", drift.dumps(changes))
        staged.write("drift.md", drift_md.render(changes))
        document["drift"] = {
            "previous": changes["previous"],
            "summary": changes["summary"],
            "file": "drift.md",
            "previous_unused": {
                f"{i['provider']}|{i['identity']}": i["unused_percent"]["previous"]
                for i in changes["identities"]
                if i["unused_percent"]["previous"] is not None
            },
        }
    staged.write("report.sarif", orjson.dumps(sarif.render(document, out, iac), option=orjson.OPT_INDENT_2))
    staged.write("report.json", orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    staged.write("report.md", report_md.render(document))
    staged.write("report.html", report_html.render(document))
    return document
