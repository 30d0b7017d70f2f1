"""The first step's set-up, done while the rest of the weights load.

A run's first denoising step pays for work that depends on the shapes of its inputs but
not on their values: compiling the repeated block (``--compile``; ~8 s at 480p on an H200
with Inductor's cache cold), FlashAttention-4's just-in-time kernels (~7 s), cuBLAS and
cuDNN set-up. The transformer is the first component to load (32 GiB of the 43), and the
text and image encoders and the VAE take ~10 s more to come from disk. So as soon as the
transformer is on the GPU, a thread runs its first block once, the way the denoising loop
will call it (same autocast, same batch, same dtypes and shapes, zero values), while the
main thread goes on loading. The first step then finds its graph and kernels ready.

Only the first entry's shapes are warmed (another size bucket compiles on its own, as it
would have). A warm-up that fails costs nothing but its time: the step sets up as before.

The main thread's loading touches state that torch keeps per process: transformers'
``from_pretrained`` sets torch's default dtype for the moment it builds UMT5 or CLIP. A
compilation that straddles that moment is refused by Dynamo's own guard ("GLOBAL_STATE
changed"; 2 of 13 runs of the GPU tests on the H200 with torch 2.11, where the tiny models
load in milliseconds). The warm-up then waits for the default dtype to be back and traces again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from tracefield.export.wan_sizes import TEMPORAL_STRIDE, VAE_STRIDE, aspect_bucket
from tracefield.generate.attention import choose_attention
from tracefield.generate.pipeline import TEXT_LENGTH, both_branches, match_ati_precision, transformer_autocast

log = logging.getLogger(__name__)

ATTEMPTS = 3  # tries of a warm-up whose compilation met the loading's change of torch's process-wide state
RACE = "GLOBAL_STATE changed"  # Dynamo's reason for refusing a graph when that state moved during its compilation


@dataclass(frozen=True)
class StepShape:
    """The shapes of one denoising step's inputs: latent ``[16, frames, height, width]`` and the contexts' token counts."""

    frames: int
    height: int
    width: int
    text_tokens: int
    image_tokens: int

    @classmethod
    def of(cls, image_hw: tuple[int, int], frames: int, max_area: int, image_encoder_dir: Path) -> Optional["StepShape"]:
        """The shapes for an image of ``image_hw`` at ``max_area`` and ``frames`` video frames; CLIP's token
        count from its ``config.json`` in ``image_encoder_dir`` (patches of its square input, plus one).
        None when that file cannot be read: loading will say what is wrong with the folder."""
        height, width = aspect_bucket(image_hw[1], image_hw[0], max_area)
        try:
            config = json.loads((image_encoder_dir / "config.json").read_text())
            tokens = (int(config["image_size"]) // int(config["patch_size"])) ** 2 + 1
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls((frames - 1) // TEMPORAL_STRIDE + 1, height // VAE_STRIDE, width // VAE_STRIDE, TEXT_LENGTH, tokens)


def run_first_block(transformer: torch.nn.Module, shape: StepShape, batch: bool) -> None:
    """The denoising loop's call of ``transformer`` (:func:`.pipeline.both_branches`) on zeros, through its first block only."""
    device = next(transformer.parameters()).device
    config = transformer.config
    zeros = dict(device=device, dtype=torch.float32)
    x = torch.zeros(1, config.in_channels, shape.frames, shape.height, shape.width, **zeros)
    t = torch.tensor(999, device=device)  # a timestep as the schedule gives it: a 0-d int64 tensor
    contexts = torch.zeros(2, shape.text_tokens, config.text_dim, **zeros)
    clip_features = torch.zeros(1, shape.image_tokens, config.image_dim, **zeros)
    blocks = transformer.blocks
    transformer.blocks = torch.nn.ModuleList(blocks[:1])
    try:
        with torch.no_grad(), transformer_autocast(transformer, device):
            both_branches(transformer, x, t, contexts, clip_features, batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        transformer.blocks = blocks


class WarmUp:
    """:func:`run_first_block` on a thread; :meth:`wait` joins it (and logs what it took or why it failed)."""

    def __init__(self, transformer: torch.nn.Module, shape: StepShape, batch: bool, what: str = "kernels") -> None:
        self.what = what
        self.seconds: Optional[float] = None
        self.error: Optional[BaseException] = None
        self.attempts = 0
        # read here, on the loading thread before it goes on: the warm-up's thread may start inside a change
        self._loading_dtype = torch.get_default_dtype()
        self._thread = threading.Thread(target=self._run, args=(transformer, shape, batch), name="tracefield-warm-up", daemon=True)

    def start(self) -> "WarmUp":
        self._thread.start()
        return self

    def _run(self, transformer: torch.nn.Module, shape: StepShape, batch: bool) -> None:
        started = time.perf_counter()
        for attempt in range(1, ATTEMPTS + 1):
            self.attempts = attempt
            try:
                run_first_block(transformer, shape, batch)
                self.error = None
                break
            except Exception as exc:  # the first step meets the same problem and says it in full
                self.error = exc
                if RACE not in str(exc):
                    break
                log.debug("the warm-up's compilation met a change of torch's global state (attempt %d); tracing again", attempt)
                _wait_for_default_dtype(self._loading_dtype)
        self.seconds = time.perf_counter() - started

    def wait(self) -> None:
        self._thread.join()
        if self.error is not None:
            log.warning("warming up the transformer failed (%s); the first step sets up instead", self.error)
        else:
            log.info("transformer warmed up beside the loading (%s, %.1f s%s)", self.what, self.seconds,
                     f", {self.attempts} attempts" if self.attempts > 1 else "")


def _wait_for_default_dtype(dtype: torch.dtype, timeout: float = 10.0) -> None:
    """Until the loading has put torch's default dtype back (milliseconds), or ``timeout`` seconds."""
    deadline = time.perf_counter() + timeout
    while torch.get_default_dtype() != dtype and time.perf_counter() < deadline:
        time.sleep(0.01)


class TransformerSetup:
    """What a run does to the transformer as soon as it has loaded (``load_pipeline``'s ``on_transformer``):
    choose its attention kernel, compile its blocks (``compile``), and on a GPU start a :class:`WarmUp`
    at ``shape``. Calling it returns what waits for the warm-up; :attr:`attention` says what runs."""

    def __init__(self, device: torch.device, attention: Optional[str], compile: bool, shape: Optional[StepShape], batch: bool) -> None:
        self.device, self.attention_name, self.compile, self.shape, self.batch = device, attention, compile, shape, batch
        self.attention: Optional[str] = None

    def __call__(self, transformer: torch.nn.Module) -> Callable[[], None]:
        self.attention = choose_attention(transformer, self.attention_name, self.device)
        if self.compile:
            transformer.compile_repeated_blocks(fullgraph=True)
        if self.shape is None or self.device.type != "cuda":
            return lambda: None
        match_ati_precision(transformer)  # the warm-up must see the numerics the loop will
        what = "compilation and kernels" if self.compile else "kernels"
        return WarmUp(transformer, self.shape, self.batch, what).start().wait
