"""A new source plugs in without editing any core module: a test-only "toy" tool layer.

It brings its own source (grants = the tools an agent may call, usage = the calls it made), its
own rules folder (which tools are destructive) and its own emitter (an allow-list file); the core
runs it like AWS and GCP, and every shared output (blocklist, reports, permission table) covers it.
"""

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import yaml
from conftest import END, FakeSource, audit, grant, identity, use

from auditor import ruleset
from auditor.catalog import Catalog
from auditor.emit import base
from auditor.emit.write import write_outputs

AGENT = "toy://agents/triage-bot"
TOOLS = {"tickets.read": "Read", "tickets.comment": "Write", "tickets.delete": "Write", "repo.force_push": "Write"}


def _toy_policies(result, folders):
    out = []
    for a in (a for a in result.audits if a.provider == "toy"):
        used = sorted(p for p, g in a.effective.items() if (a.identity, p) in _used(result))
        entry = base.IdentityPolicies("toy", a.account, a.identity, a.name, folders[a.identity])
        entry.files.append(base.PolicyFile(f"{entry.folder}/allowed-tools.json", json.dumps(used) + "\n"))
        out.append(entry)
    return out


def _used(result):
    rows = result.permissions.filter(pl.col("state") == "used")
    return set(zip(rows["identity"], rows["action"], strict=True))


def _toy_source() -> FakeSource:
    source = FakeSource(
        [identity(AGENT, account="tools", provider="toy", kind="agent", name="triage-bot")],
        [
            grant(AGENT, "tickets.*", account="tools", provider="toy"),
            grant(AGENT, "repo.*", account="tools", provider="toy"),
        ],
        [use(AGENT, "tickets.read", 40, account="tools", provider="toy", when=END)],
        catalog_of=Catalog("toy", TOOLS, "toy tools v1", service_separator="."),
    )
    source.provider = "toy"
    return source


def _toy_rules(tmp_path: Path) -> ruleset.Rules:
    folder = tmp_path / "rules"
    (folder / "toy").mkdir(parents=True)
    rule = {
        "id": "toy-destructive",
        "provider": "toy",
        "category": "destroy",
        "severity": "critical",
        "reason": "Deletes tickets or rewrites history",
        "actions": ["tickets.delete", "repo.force_push"],
    }
    (folder / "destructive.yaml").write_text(yaml.safe_dump({"version": 1, "rules": [rule]}))
    return ruleset.load([folder])


def test_a_toy_source_runs_through_the_whole_pipeline(tmp_path):
    base.register("toy", _toy_policies)
    result = audit(_toy_source(), rules=_toy_rules(tmp_path), now=datetime(2026, 11, 21, tzinfo=UTC))
    states = dict(result.permissions.select("action", "state").iter_rows())
    assert states == {
        "tickets.read": "used",
        "tickets.comment": "unused",
        "tickets.delete": "unused",
        "repo.force_push": "unused",
    }
    kinds = set(result.findings["kind"])
    assert {"unused-destructive", "wildcard-grant", "unused-grant"} <= kinds

    document = write_outputs(result, tmp_path / "out")
    out = tmp_path / "out"
    (toy,) = document["identities"]
    assert toy["provider"] == "toy" and toy["used"] == 1
    (allowed,) = toy["policy_files"]
    assert json.loads((out / allowed).read_text()) == ["tickets.read"]
    blocked = yaml.safe_load((out / "blocklist.yaml").read_text())["identities"][0]["deny"][0]["permissions"]
    assert blocked == ["repo.force_push", "tickets.delete"]
    assert "triage-bot" in (out / "report.md").read_text()
    assert document["windows"]["toy"]["end"] == "2026-11-20T12:00:00Z"
