"""Data package: GCP-specific rule files (permission facts, principals)."""
