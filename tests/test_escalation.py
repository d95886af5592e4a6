"""Privilege-escalation paths: a ground-truth account, the model's rules one by one, and properties."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor import escalation as esc
from auditor import escalation_methods as methods_rules
from auditor.catalog import Catalog, aws_catalog, aws_resource_arn_formats
from auditor.connectors.aws.iam import AuthorizationDetails, decode_document, statements
from auditor.errors import RuleError
from auditor.matching import glob_covers, globs_intersect

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT_DIR = ROOT / "tests" / "data" / "privesc-account"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
EXPIRED = '{"DateLessThan": {"aws:CurrentTime": "2020-01-01"}}'
ACCT = "123456789012"


# --- loading ---------------------------------------------------------------------------------------


def _statements(document: Any, source: str, layer: str = "identity") -> list[esc.Statement]:
    return [
        esc.Statement(
            effect=s["effect"],
            actions=tuple(s["actions"]),
            not_action=s["not_action"],
            resources=tuple(s["resources"]),
            not_resource=s["not_resource"],
            condition=s["condition"],
            layer=layer,
            source=source,
        )
        for s in statements(document)
    ]


def _own(details: AuthorizationDetails, entity: dict[str, Any], inline_key: str) -> list[esc.Statement]:
    found = []
    for item in entity.get(inline_key) or []:
        found += _statements(item["PolicyDocument"], f"{entity['Arn']}/inline/{item['PolicyName']}")
    for item in entity.get("AttachedManagedPolicies") or []:
        found += _statements(details.default_document(item["PolicyArn"]), item["PolicyArn"])
    return found


def load_account(path: Path) -> list[esc.Principal]:
    """Users (with their groups' policies and boundary), roles (with trust) and groups of an export."""
    details = AuthorizationDetails.from_file(path)
    groups = {g["GroupName"]: g for g in details.data["GroupDetailList"]}
    found = [
        esc.Principal("aws", g["Arn"], ACCT, "group", tuple(_own(details, g, "GroupPolicyList")))
        for g in groups.values()
    ]
    for user in details.data["UserDetailList"]:
        member_of = [groups[name] for name in user.get("GroupList") or []]
        own = _own(details, user, "UserPolicyList")
        own += [s for g in member_of for s in _own(details, g, "GroupPolicyList")]
        boundary = (user.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
        if boundary:
            own += _statements(details.default_document(boundary), boundary, "boundary")
        found.append(
            esc.Principal("aws", user["Arn"], ACCT, "user", tuple(own), groups=tuple(g["Arn"] for g in member_of))
        )
    for role in details.data["RoleDetailList"]:
        found.append(
            esc.Principal(
                "aws",
                role["Arn"],
                ACCT,
                "role",
                tuple(_own(details, role, "RolePolicyList")),
                trust=esc.aws_trust(decode_document(role["AssumeRolePolicyDocument"])),
                instance_profiles=tuple(p["Arn"] for p in role.get("InstanceProfileList") or []),
            )
        )
    return found


def shipped_methods() -> list[methods_rules.EscalationMethod]:
    data = yaml.safe_load((ROOT / "rules" / "privesc.yaml").read_text(encoding="utf-8"))
    return [methods_rules.parse_method(entry, f"privesc.yaml methods[{i}]") for i, entry in enumerate(data["methods"])]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return aws_catalog()


@pytest.fixture(scope="module")
def formats() -> dict[str, list[str]]:
    return aws_resource_arn_formats()


@pytest.fixture(scope="module")
def methods() -> list[methods_rules.EscalationMethod]:
    return shipped_methods()


@pytest.fixture(scope="module")
def account() -> list[esc.Principal]:
    return load_account(ACCOUNT_DIR / "authorization-details.json")


def short(arn: str) -> str:
    return arn.split(":", 5)[5]


def fired(paths: list[esc.EscalationPath]) -> set[str]:
    return {p.method for p in paths}


# --- the ground-truth account ------------------------------------------------------------------------


def test_account_recall_and_no_false_positives(account, methods, catalog, formats):
    expected = yaml.safe_load((ACCOUNT_DIR / "expected.yaml").read_text(encoding="utf-8"))["principals"]
    found = {short(k): fired(v) for k, v in esc.find_paths(account, methods, catalog, NOW, formats).items()}
    assert set(found) == set(expected), "expected.yaml must list every user and role of the account"
    rows, hits, wanted, false = [], 0, 0, 0
    for name, truth in sorted(expected.items()):
        want, got = set(truth["methods"]), found[name]
        hits, wanted, false = hits + len(want & got), wanted + len(want), false + len(got - want)
        mark = "ok  " if want == got else "FAIL"
        rows.append(f"{mark} {name:52} missed={sorted(want - got)} extra={sorted(got - want)}  # {truth['why']}")
    recall = hits / wanted
    exploitable = [n for n, t in expected.items() if t["methods"]]
    whole = sum(set(expected[n]["methods"]) <= found[n] for n in exploitable)
    print(
        f"\nrecall {recall:.1%} ({hits}/{wanted} paths), {whole}/{len(exploitable)} exploitable principals whole, "
        f"{false} false positives, {len(expected) - len(exploitable)} non-exploitable principals"
    )
    assert recall >= 0.95 and false == 0, "\n".join([f"recall {recall:.1%}, {false} false positive(s):", *rows])


def test_account_paths_explain_themselves(account, methods, catalog, formats):
    paths = {short(k): v for k, v in esc.find_paths(account, methods, catalog, NOW, formats).items()}
    (chain,) = paths["user/chain-start-user"]
    assert [short(r) for r in chain.via] == ["role/chain-intermediate-role", "role/chain-end-role"]
    (passrole,) = paths["user/privesc3-user"]
    assert "high-priv-service-role (ec2.amazonaws.com can assume it)" in passrole.detail
    (stack,) = paths["user/cfn-update-stack-user"]
    assert "cloudformation.amazonaws.com resource may run as high-priv-service-role" in stack.detail
    (token,) = paths["user/fn3-user"]
    assert token.conditions and "aws:TokenIssueTime" in token.conditions[0]
    (mfa,) = paths["user/deny-conditional-user"]
    assert mfa.conditions[0].startswith("unless denied by") and "aws:MultiFactorAuthPresent" in mfa.conditions[0]
    (direct,) = paths["user/direct-trust-user"]
    assert direct.grants[0].sources == ("trust policy of direct-trust-role",)
    assert all(p.describe().count("\n") == 0 for ps in paths.values() for p in ps)


def test_account_admin_classes(account, catalog):
    by_name = {short(p.id): p for p in account}
    level = {n: (esc.classify_admin(by_name[n], catalog, NOW) or esc.AdminClass("none", "")).level for n in by_name}
    assert level["user/admin-user"] == level["user/sre-user"] == level["role/high-priv-service-role"] == "admin"
    assert level["user/fn4-user"] == level["user/notaction-iam-user"] == "broad"
    assert level["user/fp1-user"] == level["user/fp2-user"] == level["user/fp3-user"] == "none"
    assert level["user/notaction-scoped-user"] == level["user/privesc10-user"] == "none"


# --- the model, rule by rule ----------------------------------------------------------------------


def user(name: str, *stmts: esc.Statement, groups: tuple[str, ...] = ()) -> esc.Principal:
    return esc.Principal("aws", f"arn:aws:iam::{ACCT}:user/{name}", ACCT, "user", stmts, groups=groups)


def role(name: str, *stmts: esc.Statement, trust=(), profile: bool = False) -> esc.Principal:
    arn = f"arn:aws:iam::{ACCT}:role/{name}"
    profiles = (f"arn:aws:iam::{ACCT}:instance-profile/{name}",) if profile else ()
    return esc.Principal("aws", arn, ACCT, "role", stmts, trust=tuple(trust), instance_profiles=profiles)


def allow(*actions: str, resources=("*",), condition=None, not_action=False, layer="identity", source="p"):
    return esc.Statement("Allow", actions, not_action, tuple(resources), False, condition, layer, source)


def deny(*actions: str, resources=("*",), not_resource=False, condition=None, source="d"):
    return esc.Statement("Deny", actions, False, tuple(resources), not_resource, condition, "identity", source)


def services(*names: str) -> esc.TrustStatement:
    return esc.TrustStatement(services=names)


def trusts(*principals: str, condition=None) -> esc.TrustStatement:
    return esc.TrustStatement(aws=principals, condition=condition)


ADMIN_ROLE_FOR = {
    "ec2.amazonaws.com": role("ec2-admin", allow("*"), trust=[services("ec2.amazonaws.com")], profile=True),
    "cloudformation.amazonaws.com": role("cfn-admin", allow("*"), trust=[services("cloudformation.amazonaws.com")]),
}


def paths_of(principal, others, methods, catalog, formats=None) -> set[str]:
    return fired(esc.find_paths([principal, *others], methods, catalog, NOW, formats)[principal.id])


def test_explicit_deny_empties_the_grant_before_admin(catalog):
    everything = user("u", allow("*"), deny("*"))
    assert esc.classify_admin(everything, catalog, NOW) is None
    assert esc.effective_permissions(everything, ["iam:*"], ["*"], catalog, NOW) == {}
    admin = esc.classify_admin(user("a", allow("*")), catalog, NOW)
    assert admin is not None and admin.level == "admin"


def test_notaction_short_of_iam_writes_is_broad_not_admin(catalog):
    for excluded in (["iam:*"], ["iam:Put*"], ["iam:CreatePolicyVersion"]):
        cls = esc.classify_admin(user("u", allow(*excluded, not_action=True)), catalog, NOW)
        assert cls is not None and cls.level == "broad", excluded


def test_deny_on_own_arn_keeps_a_star_grant_from_being_admin(catalog):
    own = f"arn:aws:iam::{ACCT}:user/u"
    cls = esc.classify_admin(user("u", allow("*"), deny("iam:*", resources=(own,))), catalog, NOW)
    assert cls is not None and cls.level == "broad"


def test_conditional_admin_says_so(catalog):
    mfa = '{"Bool": {"aws:MultiFactorAuthPresent": "true"}}'
    cls = esc.classify_admin(user("u", allow("*", condition=mfa)), catalog, NOW)
    assert cls is not None and cls.level == "admin" and "aws:MultiFactorAuthPresent" in cls.conditions[0]


@pytest.mark.parametrize(
    ("resource", "fires"),
    [
        ("*", True),
        (f"arn:aws:iam::{ACCT}:policy/*", True),
        ("arn:aws:iam::*:policy/team-*", True),
        ("arn:aws:iam::aws:policy/*", False),
        ("arn:aws:iam::999999999999:policy/*", False),
        ("arn:aws:s3:::bucket/*", False),
    ],
)
def test_policy_version_methods_need_customer_managed_policies(resource, fires, methods, catalog):
    principal = user("u", allow("iam:CreatePolicyVersion", resources=(resource,)))
    assert ("aws-create-policy-version" in paths_of(principal, [], methods, catalog)) is fires


def test_expired_grant_is_dead_and_request_conditions_are_shown(methods, catalog):
    expired = user("u", allow("iam:PutUserPolicy", condition='{"DateLessThan": {"aws:CurrentTime": "2020-01-01"}}'))
    assert paths_of(expired, [], methods, catalog) == set()
    ip = user("u", allow("iam:PutUserPolicy", condition='{"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}'))
    (path,) = esc.find_paths([ip], methods, catalog, NOW)[ip.id]
    assert "aws:SourceIp" in path.conditions[0]


def test_deny_that_does_not_cover_the_target_leaves_the_grant(catalog):
    principal = user(
        "u", allow("iam:CreateAccessKey"), deny("iam:CreateAccessKey", resources=(f"arn:aws:iam::{ACCT}:user/x",))
    )
    targets = [f"arn:aws:iam::{ACCT}:user/x", f"arn:aws:iam::{ACCT}:user/y"]
    granted = esc.effective_permissions(principal, ["iam:CreateAccessKey"], targets, catalog, NOW)
    assert [t for _, t in granted] == [targets[1]]


def test_deny_with_not_resource_and_policy_variable(methods, catalog):
    admin = user("admin", allow("*"))
    keys = allow("iam:CreateAccessKey", resources=(f"arn:aws:iam::{ACCT}:user/*",))
    only_own = deny(
        "iam:CreateAccessKey", resources=(f"arn:aws:iam::{ACCT}:user/${{aws:username}}",), not_resource=True
    )
    assert "aws-create-access-key" in paths_of(user("u", keys), [admin], methods, catalog)
    assert paths_of(user("u", keys, only_own), [admin], methods, catalog) == set()


def test_boundary_caps_and_must_leave_room(methods, catalog):
    put = allow("iam:PutUserPolicy")
    s3 = allow("s3:*", layer="boundary", source="b")
    assert paths_of(user("u", put, s3), [], methods, catalog) == set()
    roomy = allow("iam:PutUserPolicy", "s3:*", layer="boundary", source="b")
    assert paths_of(user("u", put, roomy), [], methods, catalog) == {"aws-put-user-policy"}
    tight = allow("iam:PutUserPolicy", layer="boundary", source="b")
    assert paths_of(user("u", put, tight), [], methods, catalog) == set()


def test_passrole_needs_a_role_the_service_can_assume(methods, catalog):
    lambda_admin = role("fn-admin", allow("*"), trust=[services("lambda.amazonaws.com")])
    ec2 = allow("iam:PassRole", "ec2:RunInstances")
    assert "aws-passrole-ec2" not in paths_of(user("u", ec2), [lambda_admin], methods, catalog)
    assert "aws-passrole-ec2" in paths_of(user("u", ec2), [ADMIN_ROLE_FOR["ec2.amazonaws.com"]], methods, catalog)
    unprofiled = role("ec2-bare", allow("*"), trust=[services("ec2.amazonaws.com")])
    assert "aws-passrole-ec2" not in paths_of(user("u", ec2), [unprofiled], methods, catalog)
    only_lambda = '{"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}'
    gated = user("u", allow("iam:PassRole", condition=only_lambda), allow("ec2:RunInstances"))
    assert paths_of(gated, [ADMIN_ROLE_FOR["ec2.amazonaws.com"]], methods, catalog) == set()


def test_passrole_to_a_role_holding_nothing_new_is_no_escalation(methods, catalog):
    weak = role("weak", allow("ec2:DescribeInstances"), trust=[services("ec2.amazonaws.com")], profile=True)
    principal = user("u", allow("iam:PassRole", "ec2:RunInstances", "ec2:DescribeInstances"))
    assert paths_of(principal, [weak], methods, catalog) == set()


def test_cloudformation_update_stack_needs_a_more_privileged_cfn_role(methods, catalog):
    principal = user("u", allow("cloudformation:UpdateStack"))
    assert paths_of(principal, [], methods, catalog) == set()
    weak = role("cfn-weak", allow("cloudformation:UpdateStack"), trust=[services("cloudformation.amazonaws.com")])
    assert paths_of(principal, [weak], methods, catalog) == set()
    strong = ADMIN_ROLE_FOR["cloudformation.amazonaws.com"]
    (path,) = esc.find_paths([principal, strong], methods, catalog, NOW)[principal.id]
    assert path.method == "aws-cloudformation-update-stack" and "cfn-admin" in path.detail


def test_trust_naming_the_account_needs_an_identity_grant(methods, catalog):
    target = role("open", allow("*"), trust=[trusts(f"arn:aws:iam::{ACCT}:root")])
    assert paths_of(user("u"), [target], methods, catalog) == set()
    granted = user("u", allow("sts:AssumeRole", resources=(target.id,)))
    assert paths_of(granted, [target], methods, catalog) == {"aws-assume-role"}


def test_trust_naming_the_arn_needs_no_grant_but_a_deny_still_blocks(methods, catalog):
    principal = user("u")
    target = role("named", allow("*"), trust=[trusts(principal.id)])
    assert paths_of(principal, [target], methods, catalog) == {"aws-assume-role"}
    blocked = user("u", deny("sts:AssumeRole"))
    assert paths_of(blocked, [target], methods, catalog) == set()
    expired = role("named", allow("*"), trust=[trusts(principal.id, condition=EXPIRED)])
    assert paths_of(principal, [expired], methods, catalog) == set()


def test_role_chains_are_transitive_reported_and_cycle_safe(methods, catalog):
    start = user("u", allow("sts:AssumeRole", resources=(f"arn:aws:iam::{ACCT}:role/a",)))
    hop = allow("sts:AssumeRole")
    a = role("a", hop, trust=[trusts(start.id), trusts(f"arn:aws:iam::{ACCT}:role/b")])
    b = role("b", hop, trust=[trusts(a.id)])
    c = role("c", allow("iam:PutRolePolicy"), trust=[trusts(b.id)])
    found = esc.find_paths([start, a, b, c], methods, catalog, NOW)[start.id]
    chains = {(p.method, tuple(r.rsplit("/", 1)[-1] for r in p.via)) for p in found}
    assert ("aws-assume-role", ("a", "b", "c")) in chains
    assert ("aws-put-role-policy", ("a", "b", "c")) in chains


def test_put_role_policy_on_a_role_it_can_assume(methods, catalog):
    target = role("t", trust=[trusts(f"arn:aws:iam::{ACCT}:root")])
    principal = user("u", allow("iam:PutRolePolicy", "sts:AssumeRole"))
    assert "aws-put-role-policy" in paths_of(principal, [target], methods, catalog)
    assert "aws-put-role-policy" not in paths_of(user("u", allow("iam:PutRolePolicy")), [target], methods, catalog)


def test_group_methods_need_membership_or_a_better_group(methods, catalog):
    group = esc.Principal("aws", f"arn:aws:iam::{ACCT}:group/ops", ACCT, "group", (allow("*"),))
    attach = allow("iam:AttachGroupPolicy", "iam:AddUserToGroup")
    assert paths_of(user("u", attach), [group], methods, catalog) == {"aws-add-user-to-group"}
    assert paths_of(user("u", attach, groups=(group.id,)), [group], methods, catalog) == {"aws-attach-group-policy"}


def test_admins_have_nothing_to_escalate(methods, catalog):
    assert paths_of(user("root-like", allow("*")), [ADMIN_ROLE_FOR["ec2.amazonaws.com"]], methods, catalog) == set()


def test_services_outside_the_grant_resource_do_not_count(methods, catalog, formats):
    scoped = user("u", allow("iam:*", not_action=True, resources=("arn:aws:s3:::reports/*",)))
    assert paths_of(scoped, list(ADMIN_ROLE_FOR.values()), methods, catalog, formats) == set()
    everywhere = user("u", allow("iam:*", not_action=True))
    assert "aws-ssm-send-command" in paths_of(everywhere, list(ADMIN_ROLE_FOR.values()), methods, catalog, formats)


# --- GCP ----------------------------------------------------------------------------------------------

PROJECT = "proj"
GCP = Catalog(
    "gcp",
    dict.fromkeys(
        [
            "iam.serviceAccounts.getAccessToken",
            "iam.serviceAccounts.actAs",
            "resourcemanager.projects.setIamPolicy",
            "storage.objects.get",
            "compute.instances.create",
        ],
        "",
    ),
    "test",
)


def sa(name: str, *bindings: tuple[str, str] | tuple[str, str, str]) -> esc.Principal:
    stmts = tuple(
        esc.Statement(
            "Allow", (b[0],), resources=(b[1],), condition=b[2] if len(b) > 2 else None, source=f"{b[0]} on {b[1]}"
        )
        for b in bindings
    )
    return esc.Principal("gcp", f"{name}@{PROJECT}.iam.gserviceaccount.com", PROJECT, "service_account", stmts)


def sa_resource(name: str) -> str:
    return f"//iam.googleapis.com/projects/{PROJECT}/serviceAccounts/{name}@{PROJECT}.iam.gserviceaccount.com"


def test_gcp_project_binding_reaches_every_service_account(methods):
    owner = sa("owner", ("resourcemanager.projects.setIamPolicy", f"projects/{PROJECT}"))
    reader = sa("reader", ("storage.objects.get", f"projects/{PROJECT}"))
    minter = sa("minter", ("iam.serviceAccounts.getAccessToken", f"projects/{PROJECT}"))
    found = esc.find_paths([owner, reader, minter], methods, GCP, NOW)[minter.id]
    assert {(p.method, p.via[-1].split("@")[0]) for p in found} == {
        ("gcp-sa-get-access-token", "owner"),
        ("gcp-sa-get-access-token", "reader"),
    }
    assert esc.find_paths([owner, reader, minter], methods, GCP, NOW)[owner.id] == []


def test_gcp_resource_binding_reaches_only_that_service_account(methods):
    owner = sa("owner", ("resourcemanager.projects.setIamPolicy", f"projects/{PROJECT}"))
    reader = sa("reader", ("storage.objects.get", f"projects/{PROJECT}"))
    minter = sa("minter", ("iam.serviceAccounts.getAccessToken", sa_resource("reader")))
    found = esc.find_paths([owner, reader, minter], methods, GCP, NOW)[minter.id]
    assert [p.via for p in found] == [(reader.id,)]


def test_gcp_impersonation_chains_and_expired_bindings(methods):
    owner = sa("owner", ("resourcemanager.projects.setIamPolicy", f"projects/{PROJECT}"))
    middle = sa("middle", ("iam.serviceAccounts.getAccessToken", sa_resource("owner")))
    start = sa("start", ("iam.serviceAccounts.getAccessToken", sa_resource("middle")))
    found = esc.find_paths([owner, middle, start], methods, GCP, NOW)[start.id]
    assert (middle.id, owner.id) in {p.via for p in found}
    expired = '{"expression": "request.time < timestamp(\\"2020-01-01T00:00:00Z\\")", "title": "gone"}'
    dead = sa("start", ("iam.serviceAccounts.getAccessToken", sa_resource("owner"), expired))
    assert esc.find_paths([owner, dead], methods, GCP, NOW)[dead.id] == []


def test_gcp_actas_needs_a_more_privileged_service_account(methods):
    creator = sa(
        "creator",
        ("compute.instances.create", f"projects/{PROJECT}"),
        ("iam.serviceAccounts.actAs", f"projects/{PROJECT}"),
    )
    peer = sa("peer", ("compute.instances.create", f"projects/{PROJECT}"))
    assert fired(esc.find_paths([creator, peer], methods, GCP, NOW)[creator.id]) == set()
    owner = sa("owner", ("resourcemanager.projects.setIamPolicy", f"projects/{PROJECT}"))
    assert fired(esc.find_paths([creator, owner], methods, GCP, NOW)[creator.id]) == {"gcp-compute-create-actas"}


# --- rules/privesc.yaml -------------------------------------------------------------------------------

GOOD = {
    "id": "x",
    "provider": "aws",
    "severity": "high",
    "requires": ["iam:PassRole", "ec2:RunInstances"],
    "works_on": {"iam:PassRole": {"target": "role-assumable-by", "services": ["ec2.amazonaws.com"]}},
    "reason": "r",
}


def test_parse_method_reads_the_schema():
    method = methods_rules.parse_method(GOOD, "w")
    assert method.spec("iam:PassRole") == methods_rules.TargetSpec("role-assumable-by", (), ("ec2.amazonaws.com",))
    assert method.spec("ec2:RunInstances") is None and not method.chains


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": None}, "'id' must be a non-empty string"),
        ({"severity": "urgent"}, "severity 'urgent' is not one of"),
        ({"provider": "oci"}, "provider 'oci' is not one of"),
        ({"requires": ["iam:*"]}, "distinct exact action names"),
        ({"requires": []}, "'requires' must be a non-empty list"),
        ({"resource_star": ["sts:AssumeRole"]}, "resource_star must list actions from requires"),
        ({"works_on": {"sts:AssumeRole": {"target": "self"}}}, "which 'requires' does not list"),
        ({"works_on": {"iam:PassRole": {"target": "galaxy"}}}, "target 'galaxy' is not one of"),
        ({"works_on": {"iam:PassRole": {"target": "role-assumable-by"}}}, "'services' must be a non-empty list"),
        (
            {"works_on": {"iam:PassRole": {"target": "self", "services": ["x"]}}},
            "only goes with target role-assumable-by",
        ),
        ({"works_on": {"iam:PassRole": {"resources": []}}}, "'resources' must be a non-empty list"),
        ({"works_on": {"iam:PassRole": {"where": "x"}}}, "unknown key(s) where"),
        ({"works_on": ["iam:PassRole"]}, "'works_on' must map"),
        ({"chains": True}, "a chaining method needs a works_on target"),
        ({"chains": "yes"}, "'chains' must be true or false"),
        ({"runs_as": "ec2.amazonaws.com"}, "'runs_as' must be a non-empty list"),
        ({"colour": "red"}, "unknown key(s) colour"),
    ],
)
def test_parse_method_errors_are_one_line_and_located(change, message):
    entry = {**GOOD, **change}
    with pytest.raises(RuleError) as caught:
        methods_rules.parse_method({k: v for k, v in entry.items() if v is not None}, "privesc.yaml methods[3]")
    text = str(caught.value)
    assert text.startswith("privesc.yaml methods[3]") and message in text and "\n" not in text


def test_gcp_methods_only_target_service_accounts():
    entry = {
        **GOOD,
        "provider": "gcp",
        "requires": ["iam.serviceAccounts.actAs"],
        "works_on": {"iam.serviceAccounts.actAs": {"target": "role"}},
    }
    with pytest.raises(RuleError, match="target 'role' is not one of"):
        methods_rules.parse_method(entry, "w")


def test_shipped_methods_keep_their_ids_and_add_the_new_ones(methods):
    ids = [m.id for m in methods]
    assert len(ids) == len(set(ids))
    for new in (
        "aws-assume-role",
        "aws-cloudformation-update-stack",
        "aws-cloudformation-change-set",
        "aws-codebuild-start-build",
    ):
        assert new in ids
    legacy = re.findall(r"^  - id: (\S+)", (ROOT / "rules" / "privesc.yaml").read_text(encoding="utf-8"), re.M)
    assert legacy == ids
    passroles = [m for m in methods if "iam:PassRole" in m.requires]
    assert passroles and all(m.spec("iam:PassRole") for m in passroles), "every PassRole method names its service"


# --- adapters --------------------------------------------------------------------------------------------


def test_aws_trust_reads_every_principal_form():
    document = {
        "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"},
            {"Effect": "Allow", "Principal": {"Service": ["ec2.amazonaws.com"]}, "Action": ["sts:AssumeRole"]},
            {"Effect": "Deny", "NotPrincipal": {"AWS": "arn:aws:iam::1:user/x"}, "NotAction": "sts:TagSession"},
            {
                "Effect": "Allow",
                "Principal": {"Federated": "cognito-identity.amazonaws.com"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {"aud": "x"}},
            },
            "garbage",
            {"Effect": "Maybe", "Principal": "*"},
        ]
    }
    star, service, negated, federated = esc.aws_trust(document)
    assert star.aws == ("*",) and service.services == ("ec2.amazonaws.com",)
    assert negated.not_principal and negated.not_action and negated.effect == "Deny"
    assert federated.federated == ("cognito-identity.amazonaws.com",) and '"aud"' in (federated.condition or "")
    assert esc.aws_trust("not a document") == ()


def test_trust_from_frame_rows():
    rows = [
        {
            "effect": "Allow",
            "principals": ["AWS:arn:aws:iam::1:user/x", "Service:ec2.amazonaws.com", "*"],
            "not_principal": False,
            "actions": ["sts:AssumeRole"],
            "not_action": False,
            "condition": None,
        }
    ]
    (stmt,) = esc.trust_from_rows(rows)
    assert stmt.aws == ("arn:aws:iam::1:user/x", "*") and stmt.services == ("ec2.amazonaws.com",)


def test_a_bounded_role_named_in_a_trust_policy_still_needs_its_boundary(methods, catalog):
    target = role("named", allow("*"), trust=[trusts(f"arn:aws:iam::{ACCT}:role/r")])
    free = role("r", allow("s3:GetObject"))
    bounded = role("r", allow("s3:GetObject"), allow("s3:*", layer="boundary", source="b"))
    assert paths_of(free, [target], methods, catalog) == {"aws-assume-role"}
    assert paths_of(bounded, [target], methods, catalog) == set()


def test_statements_from_grant_rows():
    row = {
        "effect": "Allow",
        "actions": ["s3:GetObject"],
        "not_action": False,
        "resources": None,
        "not_resource": False,
        "condition": None,
        "layer": "identity",
        "source": "p",
    }
    (stmt,) = esc.statements_from_grants([row])
    assert stmt.resources == ("*",) and stmt.actions == ("s3:GetObject",)


# --- globs --------------------------------------------------------------------------------------------

PATTERNS = st.text(alphabet="aAb*?", max_size=3)


def brute_strings(a: str, b: str, alphabet: str) -> list[str]:
    """Every string that can witness an intersection: no longer than the non-star characters of both."""
    longest = len(a.replace("*", "")) + len(b.replace("*", ""))
    return ["".join(chars) for n in range(longest + 1) for chars in itertools.product(alphabet, repeat=n)]


def glob_re(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    source = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(source, re.DOTALL | (0 if case_sensitive else re.IGNORECASE))


@settings(max_examples=200)
@given(PATTERNS, PATTERNS, st.booleans())
def test_globs_intersect_matches_brute_force(a, b, case_sensitive):
    ra, rb = glob_re(a, case_sensitive), glob_re(b, case_sensitive)
    witness = any(ra.fullmatch(s) and rb.fullmatch(s) for s in brute_strings(a, b, "aAb"))
    assert globs_intersect(a, b, case_sensitive) == witness
    assert globs_intersect(b, a, case_sensitive) == witness


@settings(max_examples=200)
@given(PATTERNS, PATTERNS, st.booleans())
def test_glob_covers_is_sound(outer, inner, case_sensitive):
    if glob_covers(outer, inner, case_sensitive):
        ro, ri = glob_re(outer, case_sensitive), glob_re(inner, case_sensitive)
        assert all(ro.fullmatch(s) for s in brute_strings(inner, "??", "aAb") if ri.fullmatch(s))


def test_glob_examples():
    assert globs_intersect("arn:aws:iam::*:policy/fn2-*", f"arn:aws:iam::{ACCT}:policy/*", True)
    assert not globs_intersect("arn:aws:iam::aws:policy/*", f"arn:aws:iam::{ACCT}:policy/*", True)
    assert globs_intersect("ARN:*", "arn:aws", False) and not globs_intersect("ARN:*", "arn:aws", True)
    assert glob_covers("arn:aws:iam::*", "arn:aws:iam::1:user/*", True)
    assert not glob_covers("arn:aws:iam::1:user/a*", "arn:aws:iam::1:user/*", True)


# --- properties of the engine ------------------------------------------------------------------------

#: Permission sets that make up the generated principals (each a method's requires, or part of one).
POOL = [
    ("iam:PassRole",),
    ("ec2:RunInstances",),
    ("lambda:CreateFunction", "lambda:InvokeFunction"),
    ("iam:PutUserPolicy",),
    ("iam:CreateAccessKey",),
    ("iam:AttachRolePolicy", "sts:AssumeRole"),
    ("cloudformation:UpdateStack",),
    ("ssm:SendCommand",),
    ("iam:CreatePolicyVersion",),
]
RESOURCES = [
    "*",
    f"arn:aws:iam::{ACCT}:role/*",
    f"arn:aws:iam::{ACCT}:role/svc-admin",
    f"arn:aws:iam::{ACCT}:user/*",
    f"arn:aws:iam::{ACCT}:policy/*",
    "arn:aws:iam::aws:policy/*",
]
WORLD = [
    role(
        "svc-admin",
        allow("*"),
        trust=[services("ec2.amazonaws.com", "lambda.amazonaws.com", "cloudformation.amazonaws.com")],
        profile=True,
    ),
    role("open", allow("s3:GetObject"), trust=[trusts(f"arn:aws:iam::{ACCT}:root")]),
    user("admin", allow("*")),
]
GRANTS = st.lists(st.tuples(st.sampled_from(POOL), st.sampled_from(RESOURCES)), min_size=1, max_size=4)


def keys(principal, methods, catalog) -> set[tuple[str, tuple[str, ...]]]:
    found = esc.find_paths([principal, *WORLD], methods, catalog, NOW)[principal.id]
    return {(p.method, p.via) for p in found}


@settings(max_examples=40, deadline=None)
@given(grants=GRANTS, data=st.data())
def test_an_unconditional_deny_of_a_required_action_never_adds_a_path(grants, data, methods, catalog):
    principal = user("gen", *(allow(*actions, resources=(r,)) for actions, r in grants))
    action = data.draw(st.sampled_from(sorted({a for actions, _ in grants for a in actions})))
    target = data.draw(st.sampled_from(RESOURCES))
    denied = user("gen", *principal.statements, deny(action, resources=(target,)))
    requiring = {m.id for m in methods if action in m.requires}
    before = {k for k in keys(principal, methods, catalog) if k[0] in requiring}
    assert {k for k in keys(denied, methods, catalog) if k[0] in requiring} <= before


@settings(max_examples=40, deadline=None)
@given(grants=GRANTS, data=st.data())
def test_narrowing_a_resource_never_adds_a_path(grants, data, methods, catalog):
    index = data.draw(st.integers(0, len(grants) - 1))
    narrower = {"*": RESOURCES[1:], f"arn:aws:iam::{ACCT}:role/*": [f"arn:aws:iam::{ACCT}:role/svc-admin"]}
    actions, resource = grants[index]
    choices = narrower.get(resource, [resource])
    narrowed = [*grants[:index], (actions, data.draw(st.sampled_from(choices))), *grants[index + 1 :]]
    wide = user("gen", *(allow(*a, resources=(r,)) for a, r in grants))
    narrow = user("gen", *(allow(*a, resources=(r,)) for a, r in narrowed))
    assert keys(narrow, methods, catalog) <= keys(wide, methods, catalog)
