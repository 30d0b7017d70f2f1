"""The generator's attention kernel (`--attention`): FlashAttention-4 where it can run, PyTorch's choice elsewhere,
and a one-line refusal, before any weights load, of a kernel that cannot run."""

from __future__ import annotations

import pytest
import torch

from tracefield.generate import attention
from tracefield.generate.attention import check_attention, choose_attention, fa4_unavailable

from test_generate import ati_export, error_line, generate, layouts  # noqa: F401 (fixtures)

CUDA = torch.device("cuda")  # only named: nothing runs on it in the CPU tests


@pytest.fixture
def hopper(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))


@pytest.fixture
def fa4_installed(hopper, monkeypatch):
    monkeypatch.setattr(attention, "fa4_installed", lambda: True)
    monkeypatch.setattr(attention, "load_fa4", lambda: reference_fa4)


def reference_fa4(q, k, v, softmax_scale=None, causal=False, return_lse=False):
    """FA4's ``flash_attn_func`` as its interface documents it: [B, S, H, D] in and out, log-sum-exp [B, H, S]."""
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    scores = (q @ k.transpose(-1, -2)) * (softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5)
    out = torch.softmax(scores, -1) @ v
    return out.transpose(1, 2).contiguous(), torch.logsumexp(scores, -1)


class Transformer:
    """Stands in for diffusers' transformer: records the backend set and the hooks registered."""

    def __init__(self):
        self.backend, self.hooks = None, []

    def set_attention_backend(self, name):
        self.backend = name

    def register_forward_pre_hook(self, hook):
        self.hooks.append(("pre", hook))

    def register_forward_hook(self, hook):
        self.hooks.append(("post", hook))


def test_fa4_says_why_it_cannot_run(monkeypatch):
    assert "CUDA GPUs only" in fa4_unavailable(torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert "Hopper or Blackwell" in fa4_unavailable(CUDA) and "sm80" in fa4_unavailable(CUDA)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(attention, "fa4_installed", lambda: False)
    assert "flash-attn-4 package is not installed (pip install 'tracefield[fa4]')" in fa4_unavailable(CUDA)


def test_fa4_is_found_by_its_files_not_by_a_flash_attn_namespace(tmp_path, monkeypatch):
    """flash-attn 2 also installs a ``flash_attn`` package: only FA4's ``flash_attn/cute/interface.py`` counts."""
    from importlib.machinery import PathFinder

    (tmp_path / "flash_attn").mkdir()
    # only tmp_path is searched: a machine with flash-attn-4 installed (the GPU one) must not answer for it
    monkeypatch.setattr(attention.importlib.util, "find_spec", lambda name: PathFinder.find_spec(name, [str(tmp_path)]))
    assert not attention.fa4_installed()
    (tmp_path / "flash_attn" / "cute").mkdir()
    (tmp_path / "flash_attn" / "cute" / "interface.py").write_text("raise ImportError('must not be imported to be found')\n")
    assert attention.fa4_installed()


def test_fa4_runs_where_it_can(fa4_installed):
    assert fa4_unavailable(CUDA) is None
    assert fa4_unavailable(torch.device("cuda", 1)) is None


def test_fa4_computes_what_pytorchs_flash_kernel_returns(fa4_installed):
    """The nine results of aten's flash attention, from FA4's [B, S, H, D] function, for [B, H, S, D] views as SDPA hands
    them: the output (in the query's layout), the log-sum-exp, and the sequence lengths."""
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, s, 3, 8, generator=generator).transpose(1, 2) for s in (5, 7, 7))  # B=2, H=3, Sq=5, Sk=7
    out, lse, _, _, max_q, max_k, *_ = attention.sdpa_flash_with_fa4(q, k, v, scale=0.3)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert out.stride() == q.stride()
    torch.testing.assert_close(lse, torch.logsumexp((q @ k.transpose(-1, -2)) * 0.3, -1))
    assert (max_q, max_k) == (5, 7)
    contiguous = q.contiguous()  # diffusers' context-parallel path hands contiguous [B, H, S, D]
    out = attention.sdpa_flash_with_fa4(contiguous, k.contiguous(), v.contiguous(), scale=0.3)[0]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert out.stride() == contiguous.stride()
    with pytest.raises(RuntimeError, match="no dropout"):
        attention.sdpa_flash_with_fa4(q, k, v, dropout_p=0.1)


def test_the_switch_puts_fa4_in_place_of_pytorchs_kernel_and_back(fa4_installed):
    """Shown on the CPU, where PyTorch has no kernel for this op: on, the op runs FA4's; off, it is gone again."""
    q = torch.randn(1, 2, 4, 8)
    op = torch.ops.aten._scaled_dot_product_flash_attention
    switch = attention.FA4Switch("CPU")
    switch.on()
    try:
        torch.testing.assert_close(op(q, q, q)[0], torch.nn.functional.scaled_dot_product_attention(q, q, q), rtol=1e-5, atol=1e-6)
    finally:
        switch.off()
    with pytest.raises(NotImplementedError):
        op(q, q, q)


def test_auto_takes_fa4_only_while_the_transformer_runs(fa4_installed):
    """The encoders keep PyTorch's kernels: FA4 is switched in before each transformer forward and out after it."""
    transformer = Transformer()
    assert choose_attention(transformer, "auto", CUDA) == "FlashAttention-4"
    assert transformer.backend == "_native_flash"  # diffusers' route to the SDPA flash kernel FA4 stands in for
    (pre, on), (post, off) = transformer.hooks
    assert (pre, post) == ("pre", "post") and on.__self__ is off.__self__ is transformer._fa4_switch
    on(transformer, ())
    assert transformer._fa4_switch.library is not None
    off(transformer, (), None)
    assert transformer._fa4_switch.library is None
    choose_attention(transformer, "fa4", CUDA)
    assert len(transformer.hooks) == 2  # chosen twice, hooked once


def test_auto_leaves_pytorchs_choice_where_fa4_cannot_run():
    transformer = Transformer()
    assert choose_attention(transformer, "auto", torch.device("cpu")) == "PyTorch's SDPA choice"
    assert transformer.backend is None and not transformer.hooks
    assert choose_attention(transformer, "_native_cudnn", CUDA) == "_native_cudnn" and transformer.backend == "_native_cudnn"


def test_a_broken_fa4_install_is_one_line(fa4_installed, monkeypatch):
    def broken():
        raise ImportError("No module named 'cutlass'")

    monkeypatch.setattr(attention, "load_fa4", broken)
    with pytest.raises(attention.TracefieldError, match=r"--attention fa4: flash-attn-4 did not load \(.*cutlass.*reinstall"):
        choose_attention(Transformer(), "fa4", CUDA)


@pytest.mark.parametrize("name, message", [
    ("fa4", "--attention fa4: it runs on CUDA GPUs only (this run is on cpu); leave out --attention"),
    ("flash-4", "--attention flash-4: not a kernel tracefield or diffusers knows; use auto, fa4, native"),
])
def test_a_kernel_that_cannot_run_is_refused_before_the_weights_load(name, message, ati_export, layouts, tmp_path, capsys, monkeypatch):
    import tracefield.generate.weights as weights

    monkeypatch.setattr(weights, "load_pipeline", lambda *a, **k: pytest.fail("weights loaded before --attention was checked"))
    assert generate(ati_export, tmp_path / "v", layouts, "--attention", name) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "v").exists()


def test_check_attention_takes_diffusers_names():
    for name in (None, "auto", "native", "_native_cudnn", "flash", "_native_flash"):
        check_attention(name, torch.device("cpu"))


# --------------------------------------------------------------------------- on CUDA (make test-gpu)


@pytest.mark.gpu
def test_cuda_fa4_computes_what_pytorchs_kernel_computes():
    """A Wan transformer with the real head size (128) at ATI's precisions: FA4 within bf16 rounding of PyTorch's choice."""
    reason = fa4_unavailable(CUDA)
    if reason:
        pytest.skip(f"FlashAttention-4: {reason}")
    from diffusers import WanTransformer3DModel

    from tracefield.generate.layouts import _fill_random, ati_config
    from tracefield.generate.pipeline import match_ati_precision
    from tracefield.generate.weights import _build_empty, diffusers_transformer_config, target_dtype

    config = diffusers_transformer_config({**ati_config("tiny"), "dim": 256, "num_heads": 2, "ffn_dim": 512}, 32)
    model = _fill_random(_build_empty(WanTransformer3DModel, config), 0, "cuda", torch.bfloat16)
    for name, p in model.named_parameters():
        p.data = p.data.to(target_dtype(name, p.data, torch.bfloat16))
    model = match_ati_precision(model.eval().requires_grad_(False))
    generator = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(1, 36, 3, 16, 24, device="cuda", generator=generator)
    text = torch.randn(1, 512, 32, device="cuda", generator=generator)
    image = torch.randn(1, 257, 32, device="cuda", generator=generator)

    @torch.no_grad()
    def forward():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return model(hidden_states=x, timestep=torch.tensor([500], device="cuda"), encoder_hidden_states=text,
                         encoder_hidden_states_image=image, return_dict=False)[0].float()

    reference = forward()
    assert choose_attention(model, "fa4", CUDA) == "FlashAttention-4"
    fast = forward()
    error = float((fast - reference).abs().max() / reference.abs().max())
    assert 0 < error < 1e-2, error  # another kernel (not the same call), the same function
    assert model._fa4_switch.library is None  # PyTorch's kernel again after the forward
