"""Data package: rule files of the agents' tool layer (classification, trust, refusals)."""
