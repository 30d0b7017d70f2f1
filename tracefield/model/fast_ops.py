"""Fast paths for half precision on CUDA, each a drop-in for the plain PyTorch expression.

* :func:`add_and_norm`: the transformer's residual add and the following LayerNorm in one
  pass (PyTorch's LayerNorm alone ran at half of memory bandwidth);
* :func:`linear_gelu`: the MLP's first layer with its GELU in the matrix product's
  epilogue (cuBLASLt), saving a read and a write of the widest activation in every block.
  The epilogue computes GELU's tanh form, which differs from the exact GELU by under 1e-3,
  below bf16's resolution;
* :func:`conv_act`, :class:`Conv2d`, :class:`ConvTranspose2d`, :func:`upsample2x`: the DPT
  heads, where eager PyTorch spent more time around the convolutions than in them
  (measured on an H200, bf16, channels-last, 8 views of 512x288):

  - a conv's bias is added by a separate broadcasting kernel (0.88 ms with bias vs 0.48 ms
    without, 128x288x512), followed by more passes for ReLU and residual adds; one fused
    Triton epilogue (:mod:`tracefield.model.triton_kernels`) does bias, residual and ReLU;
    a conv followed by ReLU alone uses cuDNN's own fused conv+bias+ReLU instead (0.49 ms
    against 0.63 ms with the separate epilogue at that shape), which also rounds to half
    precision once instead of twice;
  - ``F.interpolate(bilinear, align_corners=True)`` on channels-last bf16 runs at a
    fraction of memory bandwidth (1.33 ms for 8x128x144x256); the same upsampling as two
    small matrix products with the interpolation weights takes 0.21 ms.

The fast paths apply only to half-precision CUDA tensors without autograd; fp32 (the CPU
reference) and training run PyTorch's own kernels unchanged.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def fast_path(*tensors: torch.Tensor, memory_format: torch.memory_format = torch.channels_last) -> bool:
    """Half precision on CUDA in ``memory_format``, no autograd: where the fused and matmul paths apply."""
    return all(
        t.is_cuda and t.dtype in (torch.float16, torch.bfloat16) and t.is_contiguous(memory_format=memory_format) for t in tensors
    ) and eager_inference()


def eager_inference() -> bool:
    """No autograd and not inside torch.compile (which fuses the plain expressions itself)."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


@functools.lru_cache(maxsize=1)
def fused_kernels():
    """:mod:`tracefield.model.triton_kernels`, or None where Triton is missing (CPU builds of torch)."""
    try:
        from tracefield.model import triton_kernels
    except ImportError:
        return None
    return triton_kernels


def add_and_norm(x: torch.Tensor, y: torch.Tensor, norm: nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual stream ``x + y`` and ``norm(x + y)``; one fused pass on CUDA in half precision."""
    kernels = fused_kernels() if fast_path(x, y, memory_format=torch.contiguous_format) else None
    if kernels is None:
        total = x + y
        return total, norm(total)
    return kernels.add_layernorm(x, y, norm.weight, norm.bias, norm.eps)


def linear_gelu(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``gelu(linear(x))``; on CUDA in half precision without autograd, one cuBLASLt call with a GELU epilogue."""
    if linear.bias is None or not fast_path(x, memory_format=torch.contiguous_format):
        return F.gelu(linear(x))
    hidden = torch._addmm_activation(linear.bias, x.view(-1, x.shape[-1]), linear.weight.t(), use_gelu=True)
    return hidden.view(*x.shape[:-1], hidden.shape[-1])


def conv_act(conv: nn.Conv2d, x: torch.Tensor, relu: bool = False, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``conv(x) [+ residual]``, then ReLU if asked; bias, residual and ReLU in one fused pass on the fast path."""
    kernels = fused_kernels() if conv.bias is not None and fast_path(x) else None
    if kernels is not None and relu and residual is None and not isinstance(conv, nn.ConvTranspose2d):
        return _cudnn_conv_relu(conv, x)
    if kernels is not None and (residual is None or fast_path(residual)):
        y = _conv_without_bias(conv, x)
        if y.is_contiguous(memory_format=torch.channels_last):
            kernels.bias_act_inplace(y, conv.bias, residual, relu)
            return y
        y = y + conv.bias[:, None, None]
    else:
        y = _conv_with_bias(conv, x)
    if residual is not None:
        y = y + residual
    return F.relu(y, inplace=True) if relu else y


def _cudnn_conv_relu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """relu(conv(x) + bias) in one cuDNN call (channels-last in, channels-last out)."""
    return torch.cudnn_convolution_relu(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _conv_with_bias(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return nn.ConvTranspose2d.forward(conv, x) if isinstance(conv, nn.ConvTranspose2d) else nn.Conv2d.forward(conv, x)


def _conv_without_bias(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(conv, nn.ConvTranspose2d):
        return F.conv_transpose2d(x, conv.weight, None, conv.stride, conv.padding, conv.output_padding, conv.groups, conv.dilation)
    return F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and names) whose bias goes through :func:`conv_act`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_act(self, x)


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` likewise (no output_size argument is needed in the DPT)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return conv_act(self, x)


@functools.lru_cache(maxsize=64)
def _interpolation_matrix(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[2 * size, size]`` weights of 1-D linear interpolation with align_corners=True."""
    out = 2 * size
    src = torch.arange(out, dtype=torch.float64) * (size - 1) / max(out - 1, 1)
    lo = src.floor().long().clamp(max=size - 1)
    hi = (lo + 1).clamp(max=size - 1)
    frac = src - lo
    rows = torch.arange(out)
    matrix = torch.zeros(out, size, dtype=torch.float64)
    matrix.index_put_((rows, lo), 1 - frac, accumulate=True)
    matrix.index_put_((rows, hi), frac, accumulate=True)
    return matrix.to(device=device, dtype=dtype)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x upsampling with align_corners=True (the DPT's), ``[N, C, H, W]`` -> ``[N, C, 2H, 2W]``."""
    if not fast_path(x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    return upsample2x_matmul(x)


def upsample2x_matmul(x: torch.Tensor) -> torch.Tensor:
    """:func:`upsample2x` as two batched matrix products over the channels-last view (any device)."""
    n, c, h, w = x.shape
    rows = torch.matmul(_interpolation_matrix(h, x.device, x.dtype), x.permute(0, 2, 3, 1).reshape(n, h, w * c))
    both = torch.matmul(_interpolation_matrix(w, x.device, x.dtype), rows.view(n * 2 * h, w, c))
    return both.view(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)  # a channels-last view


def project_upsampled(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(upsample2x(x))`` for a 1x1 ``conv``; on the fast path the projection runs first.

    A 1x1 convolution and bilinear upsampling commute (the interpolation weights of every
    output pixel sum to one, so the bias passes through), and projecting before upsampling
    does the matrix product on a quarter of the pixels. The reference path keeps the
    release's order.
    """
    if not fast_path(x):
        return conv(upsample2x(x))
    return upsample2x(conv(x))


class Upsample2x(nn.Module):
    """:func:`upsample2x` as a module (the DPT head's parameter-free step)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample2x(x)
