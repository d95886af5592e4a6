"""Parsing authorization-details exports: both document encodings, groups, versions, boundaries."""

import json
import shutil
import urllib.parse
from pathlib import Path

import pytest
from conftest import one_line_error, run_cli

from auditor.connectors.aws.iam import AuthorizationDetails, PolicyError, statements
from auditor.errors import InputError
from auditor.selection import AgentSelector
from builders import ACCOUNT, allow, auth_details, deny, managed_policy, policy, role, role_arn


def frames(data, selector=None):
    """(identities, grants, gaps) of one export."""
    found = grant_set(data, selector)
    return found.identities, found.grants, found.gaps


def grant_set(data, selector=None):
    return AuthorizationDetails(data, "auth.json").frames(selector or AgentSelector())


def test_url_encoded_documents_parse_like_decoded_ones():
    doc = policy(allow(["s3:GetObject"], "arn:aws:s3:::b/*"), deny("s3:DeleteObject"))
    plain = list(statements(doc))
    encoded = list(statements(urllib.parse.quote(json.dumps(doc))))
    assert plain == encoded
    assert plain[0]["resources"] == ["arn:aws:s3:::b/*"] and plain[1]["effect"] == "Deny"


def test_single_statement_object_and_string_action():
    doc = {"Version": "2012-10-17", "Statement": {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}}
    (only,) = statements(doc)
    assert only["not_action"] and only["actions"] == ["iam:*"]


@pytest.mark.parametrize(
    "bad",
    [
        {"Statement": [{"Effect": "Permit", "Action": "*", "Resource": "*"}]},
        {"Statement": [{"Effect": "Allow", "Resource": "*"}]},
        {"Statement": [{"Effect": "Allow", "Action": 3, "Resource": "*"}]},
        "not json at all",
    ],
)
def test_invalid_documents_raise_policy_error(bad):
    with pytest.raises(PolicyError):
        list(statements(bad))


def test_default_version_is_used_not_older_ones():
    broad = managed_policy("P", policy(allow("*")))
    broad["PolicyVersionList"] = [
        {"Document": policy(allow("*")), "VersionId": "v1", "IsDefaultVersion": False},
        {"Document": policy(allow("s3:GetObject")), "VersionId": "v2", "IsDefaultVersion": True},
    ]
    broad["DefaultVersionId"] = "v2"
    _, grants, gaps = frames(auth_details([role("bot", managed=[broad["Arn"]])], [broad]))
    assert grants["actions"].to_list() == [["s3:GetObject"]]
    assert gaps.is_empty()


def test_users_inherit_group_policies_and_boundaries_are_a_separate_layer():
    boundary = managed_policy("B", policy(allow("s3:*")))
    user = {
        "Path": "/",
        "UserName": "u",
        "UserId": "AIDAX",
        "Arn": f"arn:aws:iam::{ACCOUNT}:user/u",
        "CreateDate": "2025-01-01T00:00:00Z",
        "UserPolicyList": [],
        "GroupList": ["g"],
        "AttachedManagedPolicies": [],
        "Tags": [{"Key": "agent", "Value": "yes"}],
        "PermissionsBoundary": {"PermissionsBoundaryType": "Policy", "PermissionsBoundaryArn": boundary["Arn"]},
    }
    group = {
        "Path": "/",
        "GroupName": "g",
        "GroupId": "AGPAX",
        "Arn": f"arn:aws:iam::{ACCOUNT}:group/g",
        "GroupPolicyList": [{"PolicyName": "gp", "PolicyDocument": policy(allow("ecr:*"))}],
        "AttachedManagedPolicies": [],
    }
    identities, grants, _ = frames(auth_details([], [boundary], users=[user], groups=[group]))
    kinds_of = dict(zip(identities["kind"], identities["is_agent"], strict=True))
    assert kinds_of == {"user": True, "group": False}  # groups are listed (escalation paths), never audited
    (member,) = identities.filter(identities["kind"] == "user").iter_rows(named=True)
    assert member["groups"] == [group["Arn"]]
    mine = grants.filter(grants["identity"] == user["Arn"])
    kinds = dict(zip(mine["source_kind"], mine["layer"], strict=True))
    assert kinds == {"group-inline": "identity", "boundary": "boundary"}
    scopes = dict(zip(mine["source_kind"], mine["scope"], strict=True))
    assert scopes == {"group-inline": group["Arn"], "boundary": None}  # None: on the identity itself
    assert dict(zip(mine["source_kind"], mine["policy"], strict=True))["group-inline"] == "gp"


def test_missing_managed_policy_is_a_gap_not_a_crash():
    arn = f"arn:aws:iam::{ACCOUNT}:policy/Gone"
    _, grants, gaps = frames(auth_details([role("bot", managed=[arn])]))
    assert grants.is_empty()
    assert gaps.height == 1 and "not in the export" in gaps["reason"][0]


def test_service_linked_roles_are_never_agents():
    slr = role("AWSServiceRoleForSupport", path="/aws-service-role/support.amazonaws.com/")
    identities, _, _ = frames(auth_details([slr]), AgentSelector(everyone=True))
    assert identities["is_agent"].to_list() == [False]


def test_selection_by_tag_glob_and_list(tmp_path):
    roles = [
        role("tagged"),
        role("support-bot-2", tags={}),
        role("listed", tags={}),
        role("other", tags={}),
        role("off", tags={"agent": "false"}),
    ]
    names = tmp_path / "agents.txt"
    names.write_text("# agents\nlisted\n")
    selector = AgentSelector.from_options("agent", ["support-*"], names, everyone=False)
    identities, _, _ = frames(auth_details(roles), selector)
    chosen = dict(zip(identities["name"], identities["is_agent"], strict=True))
    assert chosen == {"tagged": True, "support-bot-2": True, "listed": True, "other": False, "off": False}


def test_not_an_export_is_one_clear_error(tmp_path):
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"Roles": []}))
    with pytest.raises(InputError, match="not an authorization-details export"):
        AuthorizationDetails.from_file(path)
    path.write_text("{broken")
    with pytest.raises(InputError, match="invalid JSON"):
        AuthorizationDetails.from_file(path)


def test_identity_columns_are_typed_not_json():
    agent = role("bot", path="/agents/", tags={"agent": "true", "team": "ml"})
    slr = role("AWSServiceRoleForSupport", path="/aws-service-role/support.amazonaws.com/", tags={})
    identities, _, _ = frames(auth_details([agent, slr]))
    rows = {r["name"]: r for r in identities.iter_rows(named=True)}
    bot = rows["bot"]
    assert (bot["path"], bot["kind"], bot["service_linked"], bot["disabled"]) == ("/agents/", "role", False, False)
    assert bot["tags"] == [{"key": "agent", "value": "true"}, {"key": "team", "value": "ml"}]
    assert bot["selected_by"] == "tag agent=true" and bot["identity"] == role_arn("bot", "/agents/")
    assert rows["AWSServiceRoleForSupport"]["service_linked"] is True
    assert "service-linked" in rows["AWSServiceRoleForSupport"]["selected_by"]


def test_trust_policies_and_customer_managed_policies_are_frames():
    mine = managed_policy("Mine", policy(allow("s3:GetObject")))
    mine["PolicyVersionList"] = [
        {"Document": policy(allow("s3:GetObject")), "VersionId": "v10", "IsDefaultVersion": True},
        {"Document": policy(allow("s3:*")), "VersionId": "v9", "IsDefaultVersion": False},
    ]
    mine["DefaultVersionId"] = "v10"
    aws_owned = managed_policy("ReadOnlyAccess", policy(allow("*")), aws=True)
    found = grant_set(auth_details([role("bot", managed=[mine["Arn"], aws_owned["Arn"]])], [mine, aws_owned]))
    (trust,) = found.trusts.iter_rows(named=True)
    assert trust["identity"] == role_arn("bot") and trust["effect"] == "Allow"
    assert trust["principals"] == ["Service:lambda.amazonaws.com"] and trust["actions"] == ["sts:AssumeRole"]
    (managed,) = found.managed.iter_rows(named=True)  # AWS-owned policies are not ours to version
    assert (managed["kind"], managed["name"], managed["id"]) == ("policy", "Mine", mine["Arn"])
    assert managed["versions"] == ["v9", "v10"] and managed["default_version"] == "v10"  # oldest first


@pytest.mark.parametrize("value", [None, 5, "/", "/other/", "agents"])
def test_a_path_that_contradicts_the_arn_is_an_input_problem_and_the_arn_wins(value):
    entry = role("bot", path="/agents/")
    entry["Path"] = value
    identities, _, gaps = frames(auth_details([entry]))
    assert identities.filter(identities["kind"] == "role")["path"].to_list() == ["/agents/"]
    arn = role_arn("bot", "/agents/")
    assert [g["scope"] for g in gaps.iter_rows(named=True)] == [f"auth.json: RoleDetailList[0] ({arn})"]
    assert "does not match the Arn: '/agents/' used" in gaps["reason"][0]


def test_an_absent_path_is_taken_from_the_arn_without_a_word():
    entry = role("bot", path="/a/b/")
    del entry["Path"]
    identities, _, gaps = frames(auth_details([entry]))
    assert identities["path"].to_list() == ["/a/b/"]
    assert gaps.height == 0


@pytest.mark.parametrize("value", ["agent=true", {"agent": "true"}, [{"Key": "agent", "Value": "true"}, "team=x"]])
def test_tags_in_another_shape_are_an_input_problem(value):
    entry = role("bot")
    entry["Tags"] = value
    _, _, gaps = frames(auth_details([entry]))
    assert gaps["reason"].to_list() == ["Tags is not a list of {Key, Value} objects: the tags it holds are not read"]


def test_a_null_path_changes_no_plan_and_is_fatal_under_strict(tmp_path):
    fixture = Path(__file__).parents[1] / "fixtures" / "aws"
    altered = tmp_path / "aws"
    shutil.copytree(fixture, altered)
    export = altered / "authorization-details.json"
    data = json.loads(export.read_text())
    (deploy,) = [r for r in data["RoleDetailList"] if r["RoleName"] == "deploy-agent"]
    assert deploy["Path"] == "/agents/"
    deploy["Path"] = None
    export.write_text(json.dumps(data))
    plans = {}
    for name, folder in (("as-exported", fixture), ("null-path", altered)):
        assert run_cli("audit", "--aws-dir", folder, "--out", tmp_path / name, "-q").code in (0, 1)
        index = json.loads((tmp_path / name / "policies" / "index.json").read_text())
        plans[name] = {entry["identity"]: entry["apply"] for entry in index}
    assert plans["null-path"] == plans["as-exported"]
    assert any("/agents/" in " ".join(commands) for commands in plans["as-exported"].values())
    line = one_line_error(run_cli("audit", "--aws-dir", altered, "--out", tmp_path / "strict", "--strict", "-q"))
    assert "deploy-agent" in line and "Path" in line
