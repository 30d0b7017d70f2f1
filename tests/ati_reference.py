"""ATI's whole-pipeline reference case (../shared/vectors/ati_pipeline/dev_square.safetensors, see its README).

The case's weights are redrawn from its seed into files laid out as ATI and Wan2.1 publish
them (transformer shards in the original key layout with their index; an original ``.pth``
VAE) and read back through the project's loaders; UMT5 and CLIP are replaced on both sides
by the README's deterministic stand-ins.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from tracefield.generate.layouts import random_weights, save_sharded
from tracefield.generate.pipeline import ATIPipeline, GenerationOptions
from tracefield.generate.weights import load_original_vae, load_transformer

CASE_FILE = Path("vectors") / "ati_pipeline" / "dev_square.safetensors"
TEXT_WIDTH, CLIP_WIDTH, CLIP_SIDE, CLIP_PATCH = 32, 1280, 224, 14


def text_stand_in(prompt: str) -> torch.Tensor:
    """The README's UMT5 stand-in: ``[n, 32]`` seeded by the prompt's SHA-256."""
    data = prompt.encode("utf-8")
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little") & (2**63 - 1)
    return torch.randn(min(512, 1 + len(data) // 3), TEXT_WIDTH, generator=torch.Generator().manual_seed(seed))


def image_stand_in(pixels: torch.Tensor) -> torch.Tensor:
    """The README's CLIP stand-in: a fixed linear map of 14x14 patches, plus their mean token -> ``[B, 257, 1280]``."""
    weight = torch.randn(3 * CLIP_PATCH**2, CLIP_WIDTH, generator=torch.Generator().manual_seed(1234)) / math.sqrt(3 * CLIP_PATCH**2)
    b, grid = pixels.shape[0], CLIP_SIDE // CLIP_PATCH
    patches = pixels.float().cpu().reshape(b, 3, grid, CLIP_PATCH, grid, CLIP_PATCH).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, -1)
    tokens = patches @ weight
    return torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1).to(pixels.device)


class StandInPipeline(ATIPipeline):
    """The ATI pipeline with the reference case's encoder stand-ins."""

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        states = [text_stand_in(p) for p in prompts]
        padded = torch.stack([torch.cat([s, s.new_zeros(512 - len(s), s.shape[1])]) for s in states])
        return padded.to(self.device_for_models)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return image_stand_in(pixels)

    @property
    def clip_size(self) -> int:
        return CLIP_SIDE


@dataclass
class ReferenceCase:
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]

    @property
    def settings(self) -> dict:
        return json.loads(self.metadata["case"])

    def options(self, **overrides) -> GenerationOptions:
        case = self.settings
        values = dict(steps=case["steps"], shift=case["shift"], guidance_scale=case["guide"], seed=case["seed"],
                      max_area=case["max_area"], negative_prompt=self.metadata["negative_prompt"], noise_device="cpu")
        return GenerationOptions(**{**values, **overrides})

    def write_weights(self, folder: Path, shards: int = 2) -> tuple[Path, Path]:
        """The case's transformer as ATI publishes it (config.json, shards, index) and its VAE as Wan2.1_VAE.pth."""
        seed = int(self.metadata["seed_weights"])
        spec = json.loads(self.metadata["transformer_spec"])
        ati = folder / "ati"
        save_sharded(random_weights(spec, seed), ati, shards, sum(math.prod(shape) for _, shape in spec) * 4)
        (ati / "config.json").write_text(self.metadata["transformer"])
        vae = folder / "Wan2.1_VAE.pth"
        torch.save(dict(random_weights(json.loads(self.metadata["vae_spec"]), seed + 1)), vae)
        return ati, vae

    def pipeline(self, folder: Path) -> StandInPipeline:
        ati, vae = self.write_weights(folder)
        return StandInPipeline(None, None, None, load_original_vae(vae), load_transformer(ati, folder / "no-wan-repo", torch.float32))


def read_case(path: Path) -> ReferenceCase:
    with safe_open(str(path), framework="pt") as handle:
        return ReferenceCase({key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata()))


def stage_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """The README's gate: ``max|ours - ref| / max|ref|``."""
    assert tuple(ours.shape) == tuple(reference.shape), (tuple(ours.shape), tuple(reference.shape))
    return float((ours.double().cpu() - reference.double()).abs().max() / reference.double().abs().max())
