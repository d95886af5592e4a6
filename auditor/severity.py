"""Finding severities, lowest first (shared by the rules, the findings and the escalation engine)."""

SEVERITIES = ("info", "low", "medium", "high", "critical")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
