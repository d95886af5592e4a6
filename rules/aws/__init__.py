"""Data package: AWS-specific rule files (event mapping, observability)."""
