"""`tracefield download`: conversion to safetensors, and a clear message when offline."""

from __future__ import annotations

import pytest
import torch

import tracefield
from tracefield.cli import main
from tracefield.errors import TracefieldError
from tracefield.model.checkpoint import read_checkpoint
from tracefield.model.config import load_config
from tracefield.model.download import CONVERTED_NAME, download_checkpoint

from conftest import TINY_NET


def test_offline_says_where_to_put_the_file(tmp_path, offline_hub, capsys):
    code = main(["download", "--dest", str(tmp_path / "ckpt")])
    assert code == 2
    line = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error: ")][0]
    assert str(tmp_path / "ckpt" / "trace_anything.pt") in line
    assert "https://huggingface.co/depth-anything/trace-anything/resolve/main/trace_anything.pt" in line
    assert "run `tracefield download` again" in line


def test_network_failure_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub

    def unreachable(**kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'\nmore detail")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(TracefieldError, match="Failed to resolve 'huggingface.co'") as info:
        download_checkpoint(dest_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_local_release_file_is_checked_and_converted(tmp_path):
    """A release-style .pt (net. prefix, both head names) becomes canonical safetensors with its config."""
    cfg = load_config(TINY_NET)
    model = tracefield.load_model(cfg, device="cpu")
    release = tmp_path / "trace_anything.pt"
    torch.save({f"net.{k}": v for k, v in model.state_dict().items()}, release)
    out = download_checkpoint(dest_dir=tmp_path, config=cfg)  # finds the file already in dest
    assert out == tmp_path / CONVERTED_NAME
    tensors, metadata = read_checkpoint(out)
    assert not any(k.startswith(("track_head.", "time_head.", "local_head.")) for k in tensors)
    assert metadata["source"] == "depth-anything/trace-anything/trace_anything.pt"
    reloaded = tracefield.load_model(None, out, device="cpu")
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_wrong_file_is_refused_before_writing(tmp_path):
    torch.save({"encoder.x": torch.zeros(1)}, tmp_path / "trace_anything.pt")
    with pytest.raises(TracefieldError, match="does not match"):
        download_checkpoint(dest_dir=tmp_path, config=load_config(TINY_NET))
    assert not (tmp_path / CONVERTED_NAME).exists()
