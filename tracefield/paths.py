"""Where the bundled configs and checkpoints live, and where the public weights are published.

In a source checkout (``pip install -e .``, what ``make`` does) they are the repository's
``configs/`` and ``checkpoints/`` folders; ``TRACEFIELD_HOME`` moves checkpoints elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_CONFIG = "eval"
HF_REPO, HF_FILENAME = "depth-anything/trace-anything", "trace_anything.pt"  # the public weights (`tracefield download`)


def config_path(name_or_path: str | Path) -> Path:
    """A bundled config by name (``eval``, ``small``) or a YAML path as given."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return CONFIG_DIR / f"{name_or_path}.yaml"


def checkpoint_dir() -> Path:
    home = os.environ.get("TRACEFIELD_HOME")
    return Path(home) / "checkpoints" if home else REPO_ROOT / "checkpoints"
