"""The agents' own tool layer (provider ``tools``): MCP servers and function tools granted to each
agent, and the tool calls its traces show.

One module per job: :mod:`.inventory` (tool names and the catalog), :mod:`.classify` (tiers from
annotations, names and overrides), :mod:`.manifest` (the agent manifest), :mod:`.mcp_config` (MCP
client configurations and captured ``tools/list`` results), :mod:`.otlp` (OTLP JSON trace files),
:mod:`.calls` (spans to tool calls: attribution, one call counted once, refusals) and
:mod:`.source` (the :class:`~auditor.connectors.base.Source` the core audits).
"""
