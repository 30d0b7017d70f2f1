"""``tracefield download``: the public checkpoint from the Hugging Face hub, converted to safetensors.

The release ships ``trace_anything.pt`` (a pickle). We fetch it once with huggingface_hub,
read it with ``weights_only=True``, check every key and shape against the full-size
network, and store ``trace_anything.safetensors`` (canonical names, config in the
metadata) so later loads are fast, memory-mapped and free of pickle.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch

from tracefield.errors import TracefieldError, short_reason
from tracefield.model.checkpoint import check_and_load, read_checkpoint, save_checkpoint
from tracefield.model.config import ModelConfig, load_config
from tracefield.model.network import TraceAnything
from tracefield.paths import DEFAULT_CONFIG, HF_FILENAME, HF_REPO, checkpoint_dir, config_path

log = logging.getLogger(__name__)

CONVERTED_NAME = "trace_anything.safetensors"
LICENSE_NOTE = "weights: CC BY-NC 4.0 (non-commercial), see https://huggingface.co/depth-anything/trace-anything"


def download_checkpoint(
    dest_dir: Optional[Path] = None,
    repo: str = HF_REPO,
    filename: str = HF_FILENAME,
    source: Optional[Path] = None,
    config: Optional[ModelConfig] = None,
) -> Path:
    """Fetch (or take ``source``, or a copy already in ``dest_dir``), verify, convert; returns the .safetensors path."""
    dest_dir = Path(dest_dir or checkpoint_dir())
    local = source or dest_dir / filename
    if not local.is_file():
        local = _fetch(repo, filename, dest_dir)
    cfg = config or load_config(config_path(DEFAULT_CONFIG))
    log.info("checking %s against %s", local, cfg.source)
    tensors, _ = read_checkpoint(local)
    with torch.device("meta"):
        check_and_load(TraceAnything(cfg.net), tensors, str(local), cfg.source)
    out = dest_dir / CONVERTED_NAME
    log.info("writing %s", out)
    save_checkpoint(tensors, out, cfg.net.to_json(), extra={"source": f"{repo}/{filename}", "license": LICENSE_NOTE})
    return out


def _fetch(repo: str, filename: str, dest_dir: Path) -> Path:
    from huggingface_hub import hf_hub_download

    log.info("downloading %s from %s (about 2.7 GB; %s)", filename, repo, LICENSE_NOTE)
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename))
    except Exception as exc:  # offline, DNS, proxy, 404, auth: all end the same way for the user
        reason = short_reason(exc, limit=140, sentence=True)  # hub errors append long advice
        raise TracefieldError(
            f"{dest_dir / filename}: could not download {filename} from https://huggingface.co/{repo} ({reason}); "
            f"fetch https://huggingface.co/{repo}/resolve/main/{filename} by hand, put it at {dest_dir / filename} "
            "and run `tracefield download` again"
        ) from exc

