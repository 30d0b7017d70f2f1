"""Which kernel computes the transformer's attention.

At 480p, self-attention over 31,668 video tokens is more than half of a denoising step:
2.96 of 5.27 s per forward on an H100 with PyTorch's default choice there (cuDNN's fused
kernel, ~590 TFLOP/s; the matrix products are already at ~800 TFLOP/s). FlashAttention-4
(the ``flash-attn-4`` package: CuTe-DSL kernels for Hopper and Blackwell, installed with pip
in seconds, unlike flash-attn's hours-long build) takes its place here: while the transformer
runs, PyTorch's SDPA flash kernel (``aten::_scaled_dot_product_flash_attention``, what
diffusers' ``_native_flash`` backend calls, also from compiled graphs) is replaced by one
that calls FA4's public ``flash_attn_func``. PyTorch's own FA4 hook
(``activate_flash_attention_impl``) calls a private FA4 function whose return changed between
FA4 releases, and breaks on current ones; the public function is stable.

``auto`` takes FA4 where it can run; any other name is one of diffusers' backends
(``native``, ``_native_cudnn``, ``flash``, ...). The replacement is in place only during the
transformer's forward, so the text and image encoders keep PyTorch's kernels (FA4 refuses
shapes it cannot take rather than falling back).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from pathlib import Path
from typing import Optional

import torch

from tracefield.errors import TracefieldError, short_reason

log = logging.getLogger(__name__)

AUTO = "auto"
FA4 = "fa4"
FA4_MODULE = "flash_attn.cute.interface"
FA4_INSTALL = "pip install 'tracefield[fa4]'"
SDPA_FLASH = "_scaled_dot_product_flash_attention"  # the aten op FA4 stands in for


def fa4_installed() -> bool:
    """Whether flash-attn-4 is there, without importing it (that loads CUTLASS's DSL)."""
    spec = importlib.util.find_spec("flash_attn")
    return spec is not None and any((Path(p) / "cute" / "interface.py").is_file() for p in spec.submodule_search_locations or ())


def fa4_unavailable(device: torch.device) -> Optional[str]:
    """Why FlashAttention-4 cannot run on ``device`` here, or None when it can."""
    if device.type != "cuda":
        return f"it runs on CUDA GPUs only (this run is on {device.type})"
    major, minor = torch.cuda.get_device_capability(device)
    if major not in (9, 10):
        return f"it needs a Hopper or Blackwell GPU (sm90/sm100); this one is sm{major}{minor}"
    if not fa4_installed():
        return f"the flash-attn-4 package is not installed ({FA4_INSTALL})"
    return None


@functools.lru_cache(maxsize=1)
def load_fa4():
    """FA4's ``flash_attn_func`` (looked up once: every attention call of every step asks for it)."""
    return importlib.import_module(FA4_MODULE).flash_attn_func


def sdpa_flash_with_fa4(query, key, value, dropout_p=0.0, is_causal=False, return_debug_mask=False, *, scale=None):
    """``aten::_scaled_dot_product_flash_attention`` computed by FA4: same arguments, same nine results.

    SDPA hands ``[B, H, S, D]`` tensors (views of diffusers' ``[B, S, H, D]``); FA4 takes and
    returns ``[B, S, H, D]``, and its log-sum-exp is ``[B, H, S]`` as SDPA's. The output
    keeps the query's memory layout, as PyTorch's kernel does (compiled graphs check it).
    """
    if dropout_p or return_debug_mask:
        raise RuntimeError("FlashAttention-4 here computes inference attention: no dropout, no debug mask")
    out, lse = load_fa4()(*(x.transpose(1, 2) for x in (query, key, value)), softmax_scale=scale, causal=is_causal, return_lse=True)[:2]
    out = out.transpose(1, 2)
    if out.stride() != query.stride() and out.shape == query.shape:
        out = torch.empty_like(query).copy_(out)
    device = query.device
    return (out, lse, None, None, query.shape[2], key.shape[2], torch.zeros(2, dtype=torch.uint64, device=device),
            torch.zeros((), dtype=torch.uint64, device=device), torch.empty(0, dtype=query.dtype, device=device))


class FA4Switch:
    """Puts :func:`sdpa_flash_with_fa4` in place of PyTorch's flash kernel on ``dispatch_key`` devices, and back."""

    def __init__(self, dispatch_key: str = "CUDA") -> None:
        self.dispatch_key = dispatch_key
        self.library: Optional[torch.library.Library] = None

    def on(self, *hook_args) -> None:
        self.off()
        self.library = torch.library.Library("aten", "IMPL")
        self.library.impl(SDPA_FLASH, sdpa_flash_with_fa4, self.dispatch_key)

    def off(self, *hook_args) -> None:
        """PyTorch's kernel again (a dropped Library takes its registrations with it)."""
        self.library = None


def check_attention(name: Optional[str], device: torch.device) -> None:
    """Refuse, before any weights load, an ``--attention`` that cannot run here."""
    if name in (None, AUTO):
        return
    if name == FA4:
        reason = fa4_unavailable(device)
        if reason is not None:
            raise TracefieldError(f"--attention fa4: {reason}; leave out --attention for PyTorch's kernels")
        return
    from diffusers.models.attention_dispatch import AttentionBackendName

    if name not in {backend.value for backend in AttentionBackendName}:
        raise TracefieldError(f"--attention {name}: not a kernel tracefield or diffusers knows; use auto, fa4, native, _native_cudnn or flash")


def choose_attention(transformer: torch.nn.Module, name: Optional[str], device: torch.device) -> str:
    """Set ``transformer``'s attention as ``--attention name`` asks; returns what runs, for the log."""
    check_attention(name, device)
    if name in (None, AUTO):
        if fa4_unavailable(device) is not None:
            return "PyTorch's SDPA choice"
        name = FA4
    if name == FA4:
        try:
            load_fa4()  # imports CUTLASS's DSL once: a broken install says so here, not at the first step
        except (ImportError, OSError, RuntimeError) as exc:
            raise TracefieldError(f"--attention fa4: flash-attn-4 did not load ({short_reason(exc, 120)}); "
                                  f"reinstall it ({FA4_INSTALL}) or leave out --attention") from exc
        transformer.set_attention_backend("_native_flash")  # diffusers' route to the kernel FA4 stands in for
        if getattr(transformer, "_fa4_switch", None) is None:
            switch = transformer._fa4_switch = FA4Switch()
            transformer.register_forward_pre_hook(switch.on)
            transformer.register_forward_hook(switch.off)
        return "FlashAttention-4"
    try:
        transformer.set_attention_backend(name)
    except (ValueError, RuntimeError, ImportError) as exc:  # e.g. flash without the flash-attn package
        raise TracefieldError(f"--attention {name}: {short_reason(exc, 160, sentence=True)}; "
                              "use auto, fa4, native, _native_cudnn or flash") from exc
    return name
