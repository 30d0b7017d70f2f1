"""What the network behind a field can and cannot do, said the same way everywhere.

A field records the network that made it (``TraceField.model``: config, checkpoint,
whether the weights are untrained, what they were trained on). Two cases deserve a word
wherever a result is shown (the end of ``tracefield infer``, the viewer's scene info):
untrained random weights, and the small network trained here on synthetic scenes only,
which gets depth right but traces motion weakly, so its nearly static trajectories would
otherwise read as a broken tool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

SYNTHETIC_TRAINING = "tracefield synthetic scenes"  # the ``trained_on`` of checkpoints `tracefield train` writes
BUNDLED_SMALL = "tracefield-small.safetensors"  # the demo's checkpoint (fields written before ``trained_on`` was kept)
GET_WEIGHTS = "tracefield download"


def model_caveat(model: Mapping[str, Any]) -> Optional[str]:
    """One line about the network described by ``model`` (a field's ``model`` record), or None."""
    if model.get("untrained"):
        return (f"made with UNTRAINED random weights: the trajectories are noise; "
                f"get the public weights with `{GET_WEIGHTS}` and trace again")
    if model.get("trained_on") == SYNTHETIC_TRAINING or Path(str(model.get("checkpoint") or "")).name == BUNDLED_SMALL:
        return ("made by the small network trained on synthetic scenes only (the demo's): it traces motion weakly, "
                f"so the trajectories look nearly static; for real videos get the public weights with `{GET_WEIGHTS}` "
                "and trace again")
    return None
