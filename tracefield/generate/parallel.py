"""Videos across the processes of a run: one video split over all of them, or one video per process.

``--parallel`` (the processes come from ``torchrun`` or ``--gpus``, see :mod:`tracefield.distributed`):

* ``sequence``: every process works on every video. The transformer's tokens (32,760 for
  81 frames at 480p) are split across the processes with diffusers' context parallelism
  (``ModelMixin.enable_parallelism`` with Wan's own ``_cp_plan``: the tokens are split
  before the first block, the rotary tables alike, and gathered after the output head;
  the text and CLIP tokens are not split). Inside self-attention, Ulysses (the default)
  trades tokens for heads with an all-to-all, so each process attends over all tokens for
  its share of the heads; ``--ring R`` passes keys and values round R processes instead
  (needs an attention backend that returns the softmax's log-sum-exp, e.g. cuDNN's).
* ``sequence,guidance``: the processes split into two halves; the first half runs the
  prompt's branch, the second the negative prompt's, each half splitting the tokens as
  above, and the two predictions are exchanged after each forward. Each forward is then
  one branch alone, ATI's own order of work.
* ``data``: each process generates its share of the run list's entries alone.

With the video split, every process prepares the conditions (encoders, VAE, motion patch)
and then takes process 0's, so that all hold the very same latents (whatever their GPUs'
rounding, and with ``--seed -1``); the latents stay identical on all processes because
each step's prediction is gathered whole before the solver's step; process 0 alone decodes
and writes. ``--shard-weights`` shards each transformer block's weights over all
processes (PyTorch FSDP2 ``fully_shard``), each block gathered only while it runs: for
GPUs that cannot hold the whole 14B transformer (32 GiB in bf16) beside the activations.

What diffusers (0.42) requires, checked here before any video starts: the token count a
multiple of the split degree (its ``EquipartitionSharder``) and, for Ulysses, the heads a
multiple of the Ulysses degree; where they are not (a square image at 480p has 21 x 39 x 39
tokens), its "anything" variants split unevenly (Ulysses pads the heads), but these
cannot combine Ulysses and ring.

On the CPU (gloo) Ulysses runs with diffusers' native attention, which the tests use; ring
needs a log-sum-exp backend, and none runs on the CPU; the uneven split gathers shares of
unequal sizes, which NCCL does and gloo refuses. diffusers' ``enable_parallelism``
records ``rank % torch.accelerator.device_count()`` as the device, a division by zero
without an accelerator; the index is only recorded, so it is made to count one device
there (:func:`_one_device_on_cpu`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional

import torch
import torch.distributed as dist

from tracefield.distributed import World
from tracefield.errors import TracefieldError, short_reason
from tracefield.generate import PARALLEL_MODES

log = logging.getLogger(__name__)

SEQUENCE, GUIDANCE, DATA = PARALLEL_MODES
RING_BACKEND = "_native_cudnn"  # returns the log-sum-exp ring attention merges with; PyTorch's native SDPA call does not


def choose_mode(requested: Optional[str], entries: int, processes: int) -> str:
    """``--parallel``, or by default: a video per process when there are at least as many videos as processes."""
    if requested:
        return requested
    return DATA if entries >= processes > 1 else SEQUENCE


def check_options(mode: str, processes: int, ring: int, offload: Optional[str], shard_weights: bool, attention: Optional[str],
                  device: torch.device) -> None:
    """What can be said of the options before any weights load."""
    if ring < 1:
        raise TracefieldError(f"--ring {ring}: must be at least 1 (1: Ulysses alone)")
    if mode == DATA:
        if ring > 1 or shard_weights:
            raise TracefieldError(f"--{'ring' if ring > 1 else 'shard-weights'} splits one video; --parallel data runs a whole video per process")
        return
    if offload:
        raise TracefieldError(f"--offload with --parallel {mode}: not supported; --shard-weights spreads the transformer's weights over the processes")
    if mode == GUIDANCE and processes % 2:
        raise TracefieldError(f"--parallel {GUIDANCE}: needs an even number of processes (a half for each guidance branch), not {processes}")
    degree = processes // (2 if mode == GUIDANCE else 1)
    if degree % ring:
        raise TracefieldError(f"--ring {ring}: must divide the {degree} processes that split each video's tokens")
    if ring > 1 and device.type != "cuda":
        raise TracefieldError(f"--ring {ring}: ring attention needs a GPU backend (none returns the log-sum-exp on the CPU); use --ring 1")
    if ring > 1 and attention == "native":
        raise TracefieldError(f"--ring {ring} with --attention native: ring attention needs the log-sum-exp, which native does not return; "
                              f"use --attention {RING_BACKEND} or flash")


@dataclass(frozen=True)
class SequencePlan:
    """How one video's work is split: guidance halves x ring x Ulysses processes."""

    guidance: int = 1  # 2: each half of the processes runs one guidance branch
    ring: int = 1
    ulysses: int = 1
    anything: bool = False  # diffusers' uneven split, where the tokens or heads do not divide

    @property
    def degree(self) -> int:
        return self.ring * self.ulysses


def plan_sequence(mode: str, processes: int, ring: int, heads: int, tokens: Mapping[str, int], device: torch.device) -> SequencePlan:
    """The split for ``processes`` processes (options checked by :func:`check_options`), given the transformer's
    ``heads`` and each video's token count (name -> tokens), on ``device``'s kind."""
    guidance = 2 if mode == GUIDANCE else 1
    degree = processes // guidance
    plan = SequencePlan(guidance=guidance, ring=ring, ulysses=degree // ring)
    if degree == 1:
        return plan
    uneven = {name: n for name, n in tokens.items() if n % degree}
    if not uneven and heads % plan.ulysses == 0:
        return plan
    name, count = next(iter(uneven.items())) if uneven else (None, None)
    why = f"{name}: {count} tokens are not a multiple of {degree}" if uneven else f"{heads} heads are not a multiple of {plan.ulysses}"
    if plan.ring > 1 and plan.ulysses > 1:
        raise TracefieldError(f"{why}, and diffusers splits unevenly only with Ulysses or ring alone; use --ring 1 or --ring {degree}")
    if uneven and device.type != "cuda":
        raise TracefieldError(f"{why}: diffusers' uneven split gathers unequal shares, which gloo (CPU) cannot; "
                              f"on the CPU use a --max-area whose tokens split evenly")
    short = {n: c for n, c in tokens.items() if c < degree}
    if short:
        name, count = next(iter(short.items()))
        raise TracefieldError(f"{name}: {count} tokens cannot be split over {degree} processes; use fewer processes or a larger --max-area")
    if plan.ulysses > 1 and heads % plan.ulysses:
        pad = plan.ulysses - heads % plan.ulysses
        if pad >= (heads + pad) // plan.ulysses:  # diffusers pads fewer heads than each process gets
            raise TracefieldError(f"{heads} heads cannot be shared by {plan.ulysses} processes (Ulysses); use --ring {degree} or fewer processes")
    log.info("%s: diffusers' uneven split (its 'anything' %s)", why, "Ulysses" if plan.ulysses > 1 else "ring")
    return dataclasses.replace(plan, anything=True)


class Spread:
    """What :class:`~.pipeline.ATIPipeline` does differently when one video is spread over the processes."""

    def __init__(self, world: World, guidance_group: Optional[dist.ProcessGroup] = None, branch: Optional[int] = None) -> None:
        self.world = world
        self.guidance_group = guidance_group
        self.branch = branch  # the guidance branch this process runs (None: both)

    @property
    def leader(self) -> bool:
        return self.world.leader

    def same_conditions(self, conditions):
        """Process 0's conditions on every process (the same noise, encodings and condition, bit for bit)."""
        shared = {}
        for field in dataclasses.fields(conditions):
            tensor = getattr(conditions, field.name).contiguous()
            dist.broadcast(tensor, src=0)
            shared[field.name] = tensor
        return type(conditions)(**shared)

    def both_branches(self, mine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's branch and its peer's -> (with the prompt, with the negative prompt)."""
        both = mine.new_empty((2 * mine.shape[0], *mine.shape[1:]))  # concatenated, the layout every backend takes
        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # the newer name, where torch has it
        gather(both, mine.contiguous(), group=self.guidance_group)
        cond, uncond = both.chunk(2)
        return cond, uncond


def spread(pipe, plan: SequencePlan, world: World, shard_weights: bool = False) -> None:
    """Spread ``pipe``'s videos over the run's processes as ``plan`` says (weights loaded, attention backend chosen)."""
    from torch.distributed.device_mesh import init_device_mesh

    device = pipe.device_for_models
    transformer = pipe.transformer
    if plan.ring > 1 and _backend(transformer) == "native":
        transformer.set_attention_backend(RING_BACKEND)
    mesh = init_device_mesh(device.type, (plan.guidance, plan.ring, plan.ulysses), mesh_dim_names=("guidance", "ring", "ulysses"))
    if shard_weights:
        shard_blocks(transformer, init_device_mesh(device.type, (world.size,)))
    if plan.degree > 1:
        from diffusers import ContextParallelConfig

        config = ContextParallelConfig(ring_degree=plan.ring, ulysses_degree=plan.ulysses, mesh=mesh,
                                       ulysses_anything=plan.anything and plan.ulysses > 1, ring_anything=plan.anything and plan.ring > 1)
        # Wan 2.1's timestep is one number per video: the plan's entry for Wan 2.2's per-token timesteps would only warn.
        plan_of_wan = {module: split for module, split in transformer._cp_plan.items() if module != ""}
        warnings.filterwarnings("ignore", r"`torch\.distributed\._functional_collectives\.all_gather_tensor` is deprecated", FutureWarning)
        try:
            with _one_device_on_cpu(device), _quiet_diffusers():
                transformer.enable_parallelism(config=config, cp_plan=plan_of_wan)
        except ValueError as exc:  # an attention backend diffusers cannot split
            raise TracefieldError(f"--attention {_backend(transformer)}: {short_reason(exc, 160, sentence=True)}; leave out --attention") from exc
    guidance = mesh["guidance"]
    pipe.parallel = Spread(world, guidance.get_group(), guidance.get_local_rank()) if plan.guidance == 2 else Spread(world)
    log.info("one video over %d processes: %s", world.size, describe(plan))


def describe(plan: SequencePlan) -> str:
    parts = ["guidance branches on 2 halves"] if plan.guidance == 2 else []
    if plan.ulysses > 1:
        parts.append(f"Ulysses over {plan.ulysses}")
    if plan.ring > 1:
        parts.append(f"ring over {plan.ring}")
    return ", ".join(parts) + (" (uneven split)" if plan.anything else "")


def shard_blocks(transformer: torch.nn.Module, mesh) -> None:
    """FSDP2: each block's weights sharded over ``mesh``, gathered for its forward and freed after it."""
    from torch.distributed.fsdp import fully_shard

    for block in transformer.blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=True)


def _backend(transformer: torch.nn.Module) -> str:
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    chosen = transformer.blocks[0].attn1.processor._attention_backend
    return str(getattr(chosen, "value", chosen) or _AttentionBackendRegistry.get_active_backend()[0].value)


@contextlib.contextmanager
def _one_device_on_cpu(device: torch.device) -> Iterator[None]:
    """diffusers records ``rank % torch.accelerator.device_count()`` as the device: count one where there is no accelerator."""
    if device.type != "cpu":
        yield
        return
    count = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.accelerator.device_count = count  # type: ignore[assignment]


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """Without diffusers' 'experimental feature' warnings: the feature is chosen knowingly here."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)
