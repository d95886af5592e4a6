"""auditor: compare what AI-agent identities are granted with what they use.

The library entry point is :func:`run_audit` (an :class:`AuditConfig` in, an :class:`AuditResult`
out) and :func:`write_outputs` (the result as files); the ``auditor`` command is a thin layer over
both.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["AuditConfig", "AuditResult", "__version__", "run_audit", "write_outputs"]


def __getattr__(name: str) -> Any:  # imported on first use: `auditor --help` stays fast
    if name in ("AuditConfig", "AuditResult", "run_audit"):
        from auditor import audit

        return getattr(audit, name)
    if name == "write_outputs":
        from auditor.emit.write import write_outputs

        return write_outputs
    raise AttributeError(name)
