"""Reading the YAML files users write (camera paths, run lists) with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tracefield.errors import TracefieldError, short_reason


def load_yaml_file(path: Path, missing: str) -> Any:
    """``path`` parsed; a missing file raises ``"<path>: <missing>"`` (say what and how to make one), bad syntax its first line."""
    if not path.is_file():
        raise TracefieldError(f"{path}: {missing}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TracefieldError(f"{path}: not valid YAML ({short_reason(exc)}); fix the syntax") from exc
