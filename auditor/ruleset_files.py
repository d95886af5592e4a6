"""Locating and reading rule files: the shipped ``rules/`` package plus user ``--rules DIR`` layers."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from auditor.errors import RuleError


def builtin_rules_dir() -> Path:
    return Path(str(resources.files("auditor.rules")))


def rule_dirs(extra: Sequence[Path] = ()) -> list[Path]:
    """The shipped rules first, then each user directory in the order given (later ones extend)."""
    for directory in extra:
        if not directory.is_dir():
            raise RuleError(f"rules directory {directory} does not exist", "pass an existing directory to --rules")
    return [builtin_rules_dir(), *extra]


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RuleError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})", "fix the file") from None
    except OSError as exc:
        raise RuleError(f"{path}: cannot read ({exc.strerror})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RuleError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def layers(dirs: Sequence[Path], relative: str) -> list[tuple[Path, dict[str, Any]]]:
    """Every existing ``relative`` file under ``dirs``, parsed, in layer order."""
    found = []
    for directory in dirs:
        path = directory / relative
        if path.is_file():
            found.append((path, load_yaml(path)))
    return found
