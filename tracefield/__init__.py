"""tracefield: trajectory fields from video with the Trace Anything network.

Public API:

* :func:`load_model` builds the network from a config and loads weights strictly;
* :func:`plan_scenes` + :func:`run_infer` trace videos or frame folders into field files;
* :class:`TraceField` is the field every consumer reads (``TraceField.load(path)``).
"""

from tracefield.field import TraceField
from tracefield.infer import InferOptions, plan_scenes, run_infer
from tracefield.model import load_model

__all__ = ["InferOptions", "TraceField", "load_model", "plan_scenes", "run_infer"]
__version__ = "0.1.0"
