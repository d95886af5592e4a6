"""The shipped GCP rule data: well-formed, and known classification facts."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from conftest import RULES

from auditor.catalog import Catalog
from auditor.connectors.gcp.rules import GcpRules
from auditor.matching import has_wildcard
from auditor.ruleset import builtin_rules_dir, load_yaml

GCP = GcpRules.of(RULES)
PERMISSION = re.compile(r"^[a-z][a-zA-Z0-9]*(\.[a-zA-Z0-9]+){2,}$")


def catalog(*permissions: str) -> Catalog:
    return Catalog("gcp", {p: GCP.access_level(p) for p in permissions}, "test")


def named() -> Iterator[tuple[str, str]]:
    data = {n: load_yaml(builtin_rules_dir() / n) for n in ("destructive.yaml", "privesc.yaml", "gcp/permissions.yaml")}
    for rule in data["destructive.yaml"]["rules"]:
        if rule["provider"] == "gcp":
            yield from ((rule["id"], a) for a in rule["actions"] + rule.get("except", []))
    for method in data["privesc.yaml"]["methods"]:
        if method["provider"] == "gcp":
            yield from ((method["id"], a) for a in method["requires"])
    for log_type in ("DATA_READ", "DATA_WRITE"):
        yield from ((log_type, p) for p in data["gcp/permissions.yaml"]["log_types"][log_type])


def test_exact_names_are_gcp_permission_shaped():
    bad = [f"{where}: {name}" for where, name in named() if not has_wildcard(name) and not PERMISSION.match(name)]
    assert not bad


def test_gcp_privesc_methods_need_no_resource_star():
    methods = RULES.methods_for("gcp")
    assert len(methods) >= 20
    assert all(not m.resource_star for m in methods)
    required = [set(m.requires) for m in methods]
    for combo in (
        {"iam.serviceAccountKeys.create"},
        {"iam.serviceAccounts.getAccessToken"},
        {"iam.roles.update"},
        {"resourcemanager.projects.setIamPolicy"},
        {"compute.instances.setMetadata"},
        {"cloudfunctions.functions.update", "cloudfunctions.functions.sourceCodeSet", "iam.serviceAccounts.actAs"},
    ):
        assert combo in required, combo


@pytest.mark.parametrize(
    ("permission", "rule_id"),
    [
        ("compute.instances.delete", "gcp-destroy-verbs"),
        ("storage.objects.delete", "gcp-destroy-verbs"),
        ("cloudkms.cryptoKeyVersions.destroy", "gcp-destroy-verbs"),
        ("compute.instances.stop", "gcp-destroy-verbs"),
        ("resourcemanager.projects.setIamPolicy", "gcp-privesc-single"),
        ("iam.serviceAccountKeys.create", "gcp-privesc-single"),
        ("iam.serviceAccounts.actAs", "gcp-privesc-single"),
        ("iam.roles.update", "gcp-privesc-single"),
        ("compute.instances.setMetadata", "gcp-privesc-single"),
        ("cloudfunctions.functions.update", "gcp-privesc-single"),
        ("storage.buckets.setIamPolicy", "gcp-resource-exposure"),
        ("iam.roles.create", "gcp-identity-permissions"),
        ("logging.sinks.delete", "gcp-defense-evasion"),
        ("storage.hmacKeys.create", "gcp-credentials-create"),
    ],
)
def test_known_destructive(permission, rule_id):
    cls = RULES.classify("gcp", permission, catalog(permission))
    assert cls is not None
    hits = [
        r.id for r in RULES.destructive if r.provider == "gcp" and r.applies(permission, GCP.access_level(permission))
    ]
    assert rule_id in hits


@pytest.mark.parametrize(
    "permission",
    [
        "compute.instances.get",
        "storage.objects.list",
        "storage.objects.create",
        "compute.instances.getDeleteProtection",
        "bigquery.jobs.create",
    ],
)
def test_known_not_destructive(permission):
    assert RULES.classify("gcp", permission, catalog(permission)) is None


def test_service_agents_and_admin_roles():
    assert GCP.is_service_agent("service-123@gcp-sa-aiplatform.iam.gserviceaccount.com")
    assert GCP.is_service_agent("123@cloudservices.gserviceaccount.com")
    assert not GCP.is_service_agent("service-account@p1.iam.gserviceaccount.com")
    assert not GCP.is_service_agent("123-compute@developer.gserviceaccount.com")
    assert GCP.admin_roles == {"roles/owner", "roles/editor"}
    assert not GCP.fits_project_role("resourcemanager.organizations.get")
    assert GCP.fits_project_role("resourcemanager.projects.get")
