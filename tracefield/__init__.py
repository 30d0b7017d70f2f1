"""tracefield: trajectory fields from video with the Trace Anything network.

Public API: :func:`load_model` builds the network from a config and loads weights strictly.
"""

from tracefield.model import load_model

__all__ = ["load_model"]
__version__ = "0.1.0"
