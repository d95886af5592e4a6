"""Properties of the generated least-privilege AWS policy, checked with the project's own evaluator.

For any grants and any CloudTrail events: the policy allows every action the identity used in the
window (where its grants allowed it), allows nothing that was not used, and never allows more than
the original grants did.
"""

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.audit import AuditOptions, analyze, gather
from auditor.aws_policy import evaluate
from auditor.catalog import aws_catalog
from auditor.connectors.aws.actions import EventActionMapper
from auditor.connectors.aws.files import AwsFiles
from auditor.connectors.base import AuditRequest
from auditor.emit.write import write_outputs
from auditor.ruleset import load_rules
from auditor.ruleset_files import rule_dirs
from auditor.selection import AgentSelector
from builders import ACCOUNT, auth_details, event, managed_policy, policy, role, role_arn, snapshot

CANDIDATES = {
    "dynamodb": ["DescribeTable", "ListTables", "CreateTable", "DeleteTable", "UpdateTable", "TagResource"],
    "sqs": ["ListQueues", "CreateQueue", "DeleteQueue", "GetQueueAttributes", "SetQueueAttributes"],
    "ec2": ["DescribeInstances", "RunInstances", "TerminateInstances", "StopInstances", "DescribeVpcs"],
    "iam": ["ListRoles", "GetRole", "CreateRole", "DeleteRole", "AttachRolePolicy"],
    "kms": ["DescribeKey", "ScheduleKeyDeletion", "ListKeys", "DisableKey"],
}
MAPPER = EventActionMapper.from_rule_dirs(rule_dirs(), aws_catalog())
#: (eventSource, eventName, action) whose CloudTrail event maps to exactly that action.
UNIVERSE = [
    (f"{svc}.amazonaws.com", name, f"{svc}:{name}")
    for svc, names in CANDIDATES.items()
    for name in names
    if MAPPER.map(f"{svc}.amazonaws.com", name).actions == (f"{svc}:{name}",)
]
ACTIONS = [a for _, _, a in UNIVERSE]
SERVICES = sorted(CANDIDATES)
TABLES = [f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/T{i}" for i in range(3)]
RESOURCE_POOL = ["*", *TABLES]
END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
AGENT = role_arn("agent")

patterns = st.one_of(
    st.sampled_from(ACTIONS),
    st.sampled_from(SERVICES).map(lambda s: f"{s}:*"),
    st.tuples(st.sampled_from(SERVICES), st.sampled_from(["Describe*", "List*", "Delete*", "*Table", "?et*"])).map(
        ":".join
    ),
    st.just("*"),
)
statements = st.builds(
    lambda effect, actions, not_action, resource: {
        "Effect": effect,
        ("NotAction" if not_action else "Action"): actions,
        "Resource": resource,
    },
    st.sampled_from(["Allow", "Allow", "Allow", "Deny"]),
    st.lists(patterns, min_size=1, max_size=4),
    st.sampled_from([False, False, False, True]),
    st.sampled_from(["*", "*", TABLES[0], "arn:aws:dynamodb:*:*:table/T*"]),
)
events = st.lists(
    st.tuples(
        st.sampled_from(UNIVERSE),
        st.integers(min_value=-5, max_value=29),  # days before END (negative: after the window)
        st.sampled_from([None, None, None, "AccessDenied", "ValidationException"]),
        st.sampled_from([(), (), (TABLES[0],), (TABLES[1],), (TABLES[2],)]),
    ),
    max_size=25,
)


def _run(tmp: Path, grant_statements, boundary, raw_events):
    policies = [managed_policy("Boundary", policy(*boundary))] if boundary else []
    agent = role(
        "agent", inline={"grant": policy(*grant_statements)}, boundary=policies[0]["Arn"] if boundary else None
    )
    days: dict[str, list] = {}
    for offset in range(-2, 33):  # a heartbeat from another identity on every day: full coverage
        when = END - timedelta(days=offset)
        days.setdefault(when.strftime("%Y/%m/%d"), []).append(
            event(role_arn("other"), "s3.amazonaws.com", "ListBuckets", when.strftime("%Y-%m-%dT%H:%M:%SZ"))
        )
    for (source, name, _), offset, error, resources in raw_events:
        when = END - timedelta(days=offset, hours=1)
        days.setdefault(when.strftime("%Y/%m/%d"), []).append(
            event(AGENT, source, name, when.strftime("%Y-%m-%dT%H:%M:%SZ"), error=error, resources=resources)
        )
    snapshot(tmp / "in", auth_details([agent, role("other", tags={})], policies), days)
    request = AuditRequest(days=30, until=END, selector=AgentSelector(), rule_dirs=tuple(rule_dirs()), workers=1)
    result = analyze(
        gather([AwsFiles.from_dir(tmp / "in")], request), load_rules(), AuditOptions(drop_unobservable=True)
    )
    write_outputs(result, tmp / "out")
    files = sorted((tmp / "out" / "policies" / "aws" / ACCOUNT).glob("agent*.json"))
    return [json.loads(f.read_text()) for f in files]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(statements, min_size=1, max_size=4),
    st.one_of(st.none(), st.lists(statements, min_size=1, max_size=2)),
    events,
)
def test_generated_policy_allows_exactly_what_was_used(grant_statements, boundary, raw_events):
    with tempfile.TemporaryDirectory() as tmp:
        generated = _run(Path(tmp), grant_statements, boundary, raw_events)
    original = [policy(*grant_statements)]
    bound = [policy(*boundary)] if boundary else None

    def originally_allowed(action, resource):
        allowed = evaluate(original, action, resource) == "allow"
        return allowed and (bound is None or evaluate(bound, action, resource) == "allow")

    used = set()
    for (_, _, action), offset, error, resources in raw_events:
        if offset < 0 or error == "AccessDenied":
            continue  # outside the window, or refused: not a use
        used.add(action)
        for resource in resources or ("*",):
            if originally_allowed(action, resource):
                assert evaluate(generated, action, resource) == "allow", (action, resource)
    for action in ACTIONS:
        for resource in RESOURCE_POOL:
            decision = evaluate(generated, action, resource)
            if action not in used:
                assert decision != "allow", f"{action} on {resource} allowed but never used"
            if decision == "allow":
                assert originally_allowed(action, resource), f"{action} on {resource} wider than the grant"
