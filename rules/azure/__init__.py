"""Data package: Azure-specific rule files (operation facts, admin roles, authorization failures)."""
