"""The agents' own tool layer (provider ``tools``): MCP servers and function tools granted to each
agent, and the tool calls its traces show.

One module per job: :mod:`.inventory` (tool names and the catalog), :mod:`.classify` (tiers from
annotations, names and overrides), :mod:`.manifest` (the agent manifest), :mod:`.mcp_config` (MCP
client configurations and captured ``tools/list`` results), :mod:`.otlp` (OTLP JSON trace files),
:mod:`.calls` (spans to tool calls: attribution, one call counted once, refusals),
:mod:`.claude_settings` (Claude Code permission rules: scopes, precedence, matching),
:mod:`.claude_usage` (Claude Code transcripts and telemetry events), :mod:`.collect`
(``auditor collect mcp``: live ``tools/list`` captures) and
:mod:`.source` (the :class:`~auditor.connectors.base.Source` the core audits).
"""
