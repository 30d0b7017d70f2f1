"""The GPU-speed variants compute what the plain PyTorch layers compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tracefield
from tracefield.model.fast_ops import Conv2d, conv_act, linear_gelu, project_upsampled, upsample2x, upsample2x_matmul
from tracefield.model.rope import apply_rope, rope_in_place, rope_tables

from conftest import TINY_NET


@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (1, 8, 7, 12), (3, 2, 1, 5)])
def test_matmul_upsampling_is_bilinear_align_corners(shape):
    x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    expected = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    got = upsample2x_matmul(x)
    assert got.shape == expected.shape and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(upsample2x(x), expected)  # CPU: PyTorch's own kernel


def test_a_1x1_projection_commutes_with_the_upsampling():
    """What the fast path of ``project_upsampled`` relies on, in float64; the reference path keeps the release's order."""
    conv = torch.nn.Conv2d(6, 5, 1).double()
    x = torch.randn(2, 6, 4, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    release = conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))
    torch.testing.assert_close(upsample2x_matmul(conv(x).contiguous(memory_format=torch.channels_last)), release, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(project_upsampled(conv, x), release, rtol=0, atol=0)


@pytest.mark.gpu
def test_projecting_before_upsampling_matches_in_bf16():
    conv = Conv2d(64, 64, 1).cuda()
    x = torch.randn(3, 64, 18, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    expected = conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))
    with torch.inference_mode():
        got = project_upsampled(conv.to(torch.bfloat16).to(memory_format=torch.channels_last), x.to(torch.bfloat16))
    assert got.shape == expected.shape
    assert ((got.float() - expected).norm() / expected.norm()).item() < 1e-2


def test_conv_act_semantics():
    conv = Conv2d(4, 4, 3, padding=1)
    x, r = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    plain = F.conv2d(x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(conv_act(conv, x), plain)
    torch.testing.assert_close(conv_act(conv, x, relu=True), F.relu(plain))
    torch.testing.assert_close(conv_act(conv, x, residual=r), r + plain)


def test_conv_keeps_parameter_names():
    conv = Conv2d(3, 4, 3, padding=1)
    assert set(conv.state_dict()) == {"weight", "bias"}
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1))


@pytest.mark.gpu
def test_cuda_graphs_and_fast_ops_match_eager_fp32():
    model = tracefield.load_model(TINY_NET, device="cuda", dtype="bfloat16")
    reference = tracefield.load_model(TINY_NET, device="cuda", dtype="float32", attention="math")
    images, times = torch.rand(1, 3, 3, 64, 96, device="cuda") * 2 - 1, torch.tensor([[0.0, 0.5, 1.0]], device="cuda")
    with torch.inference_mode():
        graphed = model.predict(images, times)
        again = model.predict(images, times)  # replayed
        exact = reference.predict(images, times)
    for key in exact:
        assert torch.equal(graphed[key], again[key]), key
        err = ((graphed[key] - exact[key]).norm() / exact[key].norm()).item()
        assert err < 2e-2, (key, err)


@pytest.mark.gpu
@pytest.mark.parametrize("relu, with_residual", [(False, False), (True, False), (False, True)])
def test_fused_conv_epilogue_matches_pytorch(relu, with_residual):
    conv = Conv2d(64, 32, 3, padding=1).cuda().to(torch.bfloat16).to(memory_format=torch.channels_last)
    x = torch.randn(2, 64, 24, 40, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    r = torch.randn(2, 32, 24, 40, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    residual = r if with_residual else None
    expected = F.conv2d(x.float(), conv.weight.float(), conv.bias.float(), padding=1) + (r.float() if with_residual else 0)
    expected = F.relu(expected) if relu else expected
    with torch.inference_mode():
        got = conv_act(conv, x, relu=relu, residual=residual)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert ((got.float() - expected).norm() / expected.norm()).item() < 1e-2


@pytest.mark.gpu
def test_fused_rope_matches_reference():
    tables = rope_tables(3, 5, 64, 100.0, torch.device("cuda"))
    qkv = torch.randn(2, 15, 3, 4, 64, device="cuda", dtype=torch.bfloat16)
    expected = apply_rope(qkv[:, :, :2].float(), tables)
    with torch.inference_mode():
        fused = qkv.clone()
        assert rope_in_place(fused, tables)
    torch.testing.assert_close(fused[:, :, :2].float(), expected, rtol=1e-2, atol=1e-2)
    assert torch.equal(fused[:, :, 2], qkv[:, :, 2])  # v untouched


@pytest.mark.gpu
def test_fused_add_layernorm_matches_pytorch():
    from tracefield.model.fast_ops import add_and_norm

    norm = torch.nn.LayerNorm(1024, eps=1e-6).cuda().to(torch.bfloat16)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x, y = (torch.randn(3, 77, 1024, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    with torch.inference_mode():
        total, normed = add_and_norm(x, y, norm)
    expected_total = x.float() + y.float()
    expected = torch.nn.functional.layer_norm(expected_total, (1024,), norm.weight.float(), norm.bias.float(), 1e-6)
    torch.testing.assert_close(total.float(), expected_total, rtol=1e-2, atol=1e-2)
    assert ((normed.float() - expected).norm() / expected.norm()).item() < 5e-3


def test_linear_gelu_is_exact_off_the_fast_path():
    linear = torch.nn.Linear(16, 64)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(linear_gelu(linear, x), F.gelu(linear(x)), rtol=0, atol=0)


@pytest.mark.gpu
def test_linear_gelu_epilogue_matches_exact_gelu_in_bf16():
    linear = torch.nn.Linear(256, 1024).cuda().bfloat16()
    x = torch.randn(3, 577, 256, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        fused, exact = linear_gelu(linear, x), F.gelu(linear(x))
    assert fused.shape == exact.shape == (3, 577, 1024)
    torch.testing.assert_close(fused.float(), exact.float(), rtol=2e-2, atol=2e-2)
