"""Shared fixtures: the conformance material in ../shared, read in place, and small configs."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VECTORS = sorted((SHARED / "vectors").glob("ta_*.safetensors"))
SCENES = SHARED / "data" / "scenes"


def on_ci() -> bool:
    """CI sets CI=true (``.ci/run`` does too): there, missing material is a failure, never a skip."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_shared(path: Path) -> Path:
    """``path`` inside ../shared; skips where it is absent, but fails on CI, where a skip would hide the tests it feeds."""
    if not path.exists():
        reason = f"{path} is absent: the shared conformance material lives beside the repository in ../shared"
        if on_ci():
            pytest.fail(f"{reason}; CI (CI=true) must provide it: check out or link the shared folder next to the repository", pytrace=False)
        pytest.skip(reason)
    return path


@dataclass
class Vector:
    """One conformance file: config, state dict, inputs and reference outputs."""

    name: str
    config: dict
    state_dict: dict[str, torch.Tensor]
    images: list[torch.Tensor]
    times: list[torch.Tensor]
    outputs: dict[str, torch.Tensor]

    @property
    def num_views(self) -> int:
        return len(self.images)


def read_vector(path: Path) -> Vector:
    with safe_open(str(path), framework="pt") as handle:
        config = json.loads(handle.metadata()["config"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    views = sum(1 for key in tensors if key.startswith("in.img."))
    return Vector(
        name=path.stem,
        config=config,
        state_dict={k[3:]: v for k, v in tensors.items() if k.startswith("sd.")},
        images=[tensors[f"in.img.{i}"] for i in range(views)],
        times=[tensors[f"in.time.{i}"] for i in range(views)],
        outputs={k[4:]: v for k, v in tensors.items() if k.startswith("out.")},
    )


@pytest.fixture(params=[p.name for p in VECTORS] or ["ta_*.safetensors"])
def vector(request) -> Vector:
    return read_vector(require_shared(SHARED / "vectors" / request.param))  # no vectors: names the pattern that found none


@pytest.fixture(scope="session")
def k10_vector() -> Vector:
    return read_vector(require_shared(SHARED / "vectors" / "ta_k10_3views_64x96.safetensors"))


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double() - ref.double()).norm() / ref.double().norm()).item()


TINY_NET = {
    "encoder_args": {"encoder_type": "croco", "patch_size": 16, "embed_dim": 32, "num_heads": 2, "depth": 1, "pos_embed": "RoPE100"},
    "decoder_args": {"decoder_type": "fast3r", "enc_embed_dim": 32, "embed_dim": 32, "num_heads": 2, "depth": 2},
    "head_args": {"head_type": "dpt", "patch_size": 16, "with_local_head": True},
    "head_dims": {"feature_dim": 8, "layer_dims": [4, 8, 8, 16]},
    "poly_degree": 4,
}


@pytest.fixture
def tiny_config_file(tmp_path: Path) -> Path:
    """A YAML config of a very small network, so CLI runs take about a second on CPU."""
    from omegaconf import OmegaConf

    path = tmp_path / "tiny.yaml"
    OmegaConf.save({"model": TINY_NET}, path)
    return path


def free_port() -> int:
    """A port nobody listens on right now (for servers started by tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; returns whether it held (assert on it).
    For state that a server's threads change after a message: waiting for it, not for a fixed time, is what keeps a
    test steady on a loaded machine."""
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            return False
        time.sleep(0.005)
    return True


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` (``make test-gpu`` runs them alone) skip, saying why, where CUDA is missing."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine (make test-gpu runs these on a GPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _this_machine() -> set[str]:
    names = {"localhost", "::1", "0.0.0.0", "", socket.gethostname()}
    try:
        names.add(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    return names


_LOCAL = _this_machine()


def _is_local(host: str | bytes | None) -> bool:
    name = host.decode() if isinstance(host, bytes) else str(host or "")
    return name in _LOCAL or name.startswith("127.")


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch):
    """Tests never go online: a name or address off this machine is refused at once, and the test fails even when
    the code under test turned the refusal into a clean error message.

    A library told to be offline too late (huggingface_hub reads HF_HUB_OFFLINE at import) would otherwise reach
    the internet on a developer's machine and wait out a timeout on CI, where only package registries answer.
    """
    resolve, connect, connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex
    refused = []

    def refuse(host):
        refused.append(host)
        raise OSError(f"tests do not go online ({host!r} is not this machine): mock the call or tell the library it is offline")

    def getaddrinfo(host, *args, **kwargs):
        return resolve(host, *args, **kwargs) if _is_local(host) else refuse(host)

    def guarded(real):
        def call(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
                refuse(address[0])
            return real(sock, address)
        return call

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", guarded(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(connect_ex))
    yield
    if refused:
        pytest.fail(f"the test tried to go online ({', '.join(map(repr, sorted(set(map(str, refused)))))}): mock the call or make the library offline")


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch) -> Path:
    """The Hugging Face hub offline with an empty cache, returned. The hub reads both variables at import, so once
    any test has imported it, setting them alone comes too late: its constants are set too."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache / "hub"))
    return cache


@pytest.fixture(autouse=True)
def _fresh_logging():
    """`tracefield.cli.main` points our loggers at the stderr of its moment; undo that after each test."""
    yield
    for name in ("tracefield", "viewer"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


@pytest.fixture(autouse=True)
def _diffusers_attention_restored():
    """diffusers' ``set_attention_backend`` also sets its process-wide active backend, so a test that picks a kernel
    for its model (FA4 goes through ``_native_flash``) would hand it to the models of later tests in the same
    process: on a GPU machine a CPU test then asked for the flash kernel. Put back what was active before."""
    dispatch = sys.modules.get("diffusers.models.attention_dispatch")
    before = dispatch._AttentionBackendRegistry.get_active_backend()[0] if dispatch else None
    yield
    dispatch = sys.modules.get("diffusers.models.attention_dispatch")
    if dispatch is not None:
        dispatch._AttentionBackendRegistry.set_active_backend(before or dispatch.AttentionBackendName(dispatch.DIFFUSERS_ATTN_BACKEND))


@contextmanager
def serving(folder: Path, wait: float = 60, **options):
    """The viewer of the field saved in ``folder``, opened as ``tracefield view folder`` opens it, on a free local
    port, once it has drawn the first frame; stopped afterwards, also when it never got there."""
    from viewer.app import Viewer, ViewerOptions, open_field

    field, scene_folder = open_field(folder)
    running = Viewer(field, scene_folder, ViewerOptions(port=free_port(), **options))
    try:
        assert running.wait_idle(wait)
        yield running
    finally:
        running.stop()
