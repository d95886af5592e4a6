"""``auditor.guard``: the blocklist enforced inside the agent's process, at the tool-call layer.

    from auditor.guard import Guard
    guard = Guard.from_blocklist("out/blocklist.yaml", identity="deploy-agent",
                                 queue="approvals.db", log="guard.jsonl")
    guard.protect(boto3_session)                      # every boto3 call checked before it is sent
    client = SomeManagementClient(cred, sub, per_call_policies=[guard.azure_policy()])
    @guard.tool("refund_order") def refund_order(...): ...

Importing this package loads the standard library and the project's light modules only: boto3's
hook, the Azure policy, YAML and JSON Schema are loaded when first used.
"""

from __future__ import annotations

from auditor.guard.core import Guard
from auditor.guard.errors import ActionBlocked, ActionDenied, GuardConfigError, GuardRefusal
from auditor.guard.log import DecisionLog
from auditor.guard.policy import IdentityPolicy, Verdict

__all__ = [
    "ActionBlocked",
    "ActionDenied",
    "DecisionLog",
    "Guard",
    "GuardConfigError",
    "GuardRefusal",
    "IdentityPolicy",
    "Verdict",
]
