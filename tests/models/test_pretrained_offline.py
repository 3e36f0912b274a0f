"""ImageNet encoder weights on a machine without network: read from the Hugging Face cache at once,
or one line within seconds naming the docs section that says how to bring them (which exists)."""

import json
import socket
import time

import pytest
import torch

from conftest import REPO
from recallseg.errors import UserError
from recallseg.models.builder import PRETRAINED_HELP, build_model
from test_docs import HEADING, github_slug

IMAGENET_RESNET18 = {"_target_": "segmentation_models_pytorch.create_model", "arch": "DeepLabV3Plus", "encoder_name": "resnet18", "encoder_weights": "imagenet"}


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Every connection and name lookup fails, and the hub's cache is an empty folder of this test."""
    import huggingface_hub.constants
    import segmentation_models_pytorch  # noqa: F401  (imported before the clock starts)

    def refuse(*args, **kwargs):
        raise OSError("network is blocked")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_offline_imagenet_weights_fail_fast_in_one_line_naming_the_section(no_network):
    import huggingface_hub.constants

    started = time.monotonic()
    with pytest.raises(UserError) as info:
        build_model(IMAGENET_RESNET18, 3)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "\n" not in message and message.startswith("model.encoder_weights: ") and PRETRAINED_HELP in message
    assert "cannot be reached" in message and "model.encoder_weights=null" in message
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # the cache-only mode ends with the build


def test_offline_imagenet_weights_in_the_cache_load_at_once(no_network):
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders, get_encoder

    settings = encoders["resnet18"]["pretrained_settings"]["imagenet"]
    snapshot = no_network / f"models--{settings['repo_id'].replace('/', '--')}" / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    weights = {key: torch.full_like(value, 0.5) for key, value in get_encoder("resnet18").state_dict().items()}
    save_file(weights, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text(json.dumps({"mean": [0.5] * 3, "std": [0.5] * 3}))
    started = time.monotonic()
    model = build_model(IMAGENET_RESNET18, 3)
    assert time.monotonic() - started < 5
    assert torch.equal(model.encoder.conv1.weight, weights["conv1.weight"])


def test_the_section_the_error_names_exists():
    page, anchor = PRETRAINED_HELP.split("#")
    headings = [HEADING.match(line) for line in (REPO / page).read_text().splitlines()]
    assert anchor in {github_slug(match.group(2)) for match in headings if match}


def test_the_probe_tells_a_listening_hub_from_a_closed_one(monkeypatch):
    import huggingface_hub.constants

    from recallseg.models.builder import hub_reachable

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
        assert hub_reachable(timeout=2)
    started = time.monotonic()
    assert not hub_reachable(timeout=2)  # the port is closed now: refused at once
    assert time.monotonic() - started < 1


def test_the_probe_asks_the_proxy_that_downloads_would_go_through(monkeypatch):
    """Behind an HTTP(S) proxy the server's own address may be closed to this machine while downloads work."""
    from recallseg.models.download_probe import reachable

    for name in ("no_proxy", "NO_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with socket.create_server(("127.0.0.1", 0)) as proxy:
        monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.getsockname()[1]}")
        assert reachable("https://download.pytorch.invalid/models/resnet18.pth", timeout=2)
