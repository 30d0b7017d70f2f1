"""The Trace Anything network: config, layers, checkpoints and ``load_model``."""

from tracefield.model.build import load_model, resolve_device, resolve_dtype
from tracefield.model.config import ModelConfig, NetConfig, load_config
from tracefield.model.network import TraceAnything

__all__ = ["ModelConfig", "NetConfig", "TraceAnything", "load_config", "load_model", "resolve_device", "resolve_dtype"]
