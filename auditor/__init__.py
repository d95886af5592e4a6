"""auditor: compare what AI-agent identities are granted with what they use."""

__version__ = "0.1.0"
