"""Connectors: each one reads one source (files or a live API) into the normalized frames of auditor.model."""
