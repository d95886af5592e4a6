"""Data package: the rule files shipped with auditor (YAML). Users extend them with ``--rules DIR``."""
