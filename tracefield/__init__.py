"""tracefield: trajectory fields from video with the Trace Anything network.

Public API:

* :func:`load_model` builds the network from a config and loads weights strictly;
* :func:`plan_scenes` + :func:`run_infer` trace videos or frame folders into field files;
* :class:`TraceField` is the field every consumer reads (``TraceField.load(path)``).

The names are imported on first use, so that a consumer of fields (the viewer, an
export) does not pay for loading the network's modules at start-up.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TraceField": "tracefield.field",
    "InferOptions": "tracefield.infer",
    "plan_scenes": "tracefield.infer",
    "run_infer": "tracefield.shards",
    "load_model": "tracefield.model",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tracefield' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
