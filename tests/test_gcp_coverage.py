"""What Cloud Audit Logs can show: log types, auditConfigs, exemptions, late enablement."""

from __future__ import annotations

from conftest import RULES as ALL_RULES

from auditor.connectors.gcp.coverage import AuditLogConfig, observability_rows
from auditor.connectors.gcp.rules import GcpRules

RULES = GcpRules.of(ALL_RULES)
WINDOW = ("2026-11-01T00:00:00Z", "2026-11-30T23:59:59Z")
PERMS = [
    "compute.instances.stop",  # ADMIN_WRITE: always logged
    "compute.instances.list",  # ADMIN_READ
    "storage.objects.get",  # DATA_READ
    "storage.objects.create",  # DATA_WRITE
    "bigquery.tables.getData",  # BigQuery: always logged
    "iam.serviceAccounts.getAccessToken",  # logged by iamcredentials
]


def reasons(rows, identity=None):
    return {p: r["reason"] for r in rows if r["identity"] == identity for p in r["actions"]}


def test_log_types_services_and_access_levels():
    assert RULES.log_type("compute.instances.stop") == "ADMIN_WRITE"
    assert RULES.log_type("compute.instances.aggregatedList") == "ADMIN_READ"
    assert RULES.log_type("storage.objects.get") == "DATA_READ"
    assert RULES.log_type("storage.objects.delete") == "DATA_WRITE"
    assert RULES.service("resourcemanager.projects.get") == "cloudresourcemanager.googleapis.com"
    assert RULES.service("iam.serviceAccounts.signJwt") == "iamcredentials.googleapis.com"
    assert RULES.access_level("compute.instances.list") == "List"
    assert RULES.access_level("storage.buckets.getIamPolicy") == "Read"
    assert RULES.access_level("storage.buckets.setIamPolicy") == "Permissions management"
    assert RULES.access_level("compute.instances.setLabels") == "Tagging"
    assert RULES.access_level("compute.instances.delete") == "Write"


def test_defaults_only_admin_activity_and_bigquery_are_observable():
    rows = observability_rows("p1", PERMS, AuditLogConfig(), RULES, [], WINDOW)
    unobservable = reasons(rows)
    assert set(unobservable) & set(PERMS) == {
        "compute.instances.list",
        "storage.objects.get",
        "storage.objects.create",
        "iam.serviceAccounts.getAccessToken",
    }
    assert unobservable["storage.objects.get"] == (
        "DATA_READ audit logs for storage.googleapis.com are not enabled (auditConfigs)"
    )
    assert "iam.serviceAccounts.actAs" in unobservable  # authorization-only


def test_audit_configs_per_service_and_all_services_with_exemptions():
    config = AuditLogConfig.from_configs(
        [
            {
                "service": "storage.googleapis.com",
                "auditLogConfigs": [
                    {"logType": "DATA_READ", "exemptedMembers": ["serviceAccount:bot@p1.iam.gserviceaccount.com"]},
                    {"logType": "DATA_WRITE"},
                ],
            },
            {"service": "allServices", "auditLogConfigs": [{"logType": "ADMIN_READ"}]},
        ]
    )
    rows = observability_rows("p1", PERMS, config, RULES, [], WINDOW)
    assert set(reasons(rows)) & set(PERMS) == {"iam.serviceAccounts.getAccessToken"}  # iamcredentials DATA_READ
    exempted = reasons(rows, "bot@p1.iam.gserviceaccount.com")
    assert set(exempted) == {"storage.objects.get"}
    assert "exempted from DATA_READ" in exempted["storage.objects.get"]


def test_a_log_type_enabled_during_the_window_is_not_trusted():
    config = AuditLogConfig.from_configs(
        [{"service": "storage.googleapis.com", "auditLogConfigs": [{"logType": "DATA_READ"}]}]
    )
    late = [("2026-11-10T08:00:00Z", "ADD", "storage.googleapis.com", "DATA_READ")]
    before = [("2026-10-10T08:00:00Z", "ADD", "storage.googleapis.com", "DATA_READ")]
    assert (
        "enabled on 2026-11-10"
        in reasons(observability_rows("p1", PERMS, config, RULES, late, WINDOW))["storage.objects.get"]
    )
    assert "storage.objects.get" not in reasons(observability_rows("p1", PERMS, config, RULES, before, WINDOW))
