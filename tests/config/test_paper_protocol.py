"""experiment=synthia_paper / cityscapes_paper follow the paper's code item by item (README,
"The paper's protocol"), and the parts that make it possible: the paper code's network
(model=deeplab_authors), its Synthia split, BGR input, its augmentation and the baselines'
settings (protocol=paper)."""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONFIG_DIR
from recallseg.pipeline.builder import build_dataset
from recallseg.errors import UserError
from recallseg.losses import LossContext, build_loss
from recallseg.models import build_model

EXPERIMENTS = ("synthia_paper", "cityscapes_paper")
SYNTHIA_MEAN_255 = (55.09944, 62.203827, 71.23802)  # B, G, R: their loader's Synthia statistics
SYNTHIA_STD_255 = (49.56111, 51.497387, 55.363934)


def composed(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["output_dir=/tmp/unused", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


# ------------------------------------------------------------------ every row of the protocol table


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_paper_experiments_follow_the_authors_code(experiment):
    cfg = composed(f"experiment={experiment}", "loss=recall")
    synthia = experiment == "synthia_paper"
    # optimizer, batch, iterations
    assert cfg["optimizer"]["_target_"] == "torch.optim.Adam" and cfg["optimizer"]["weight_decay"] == 0.0
    assert cfg["optimizer"]["lr"] == (1e-3 if synthia else 1e-4)
    assert cfg["trainer"]["batch_size"] == 6 and cfg["trainer"]["max_iters"] == (100_000 if synthia else 90_000)
    # lr schedule: constant (their empty lr_schedule -> ConstantLR), no warmup
    assert cfg["scheduler"]["_target_"] == "recallseg.training.optim.ConstantSchedule" and cfg["scheduler"]["warmup_iters"] == 0
    # precision: fp32
    assert cfg["trainer"]["amp"] == "off"
    # network: their DeepLabV3+ (structure and size: test_authors_network_*)
    model = cfg["model"]
    assert model["_target_"] == "recallseg.models.authors_deeplab.AuthorsDeepLabV3Plus" and model["encoder_name"] == "authors_resnet18"
    assert model["atrous_rates"] == [6, 12, 18] and model["aspp_dropout"] == 0.5 and model["decoder_dropout"] == [0.5, 0.1]
    # pretraining: their partial torchvision transplant
    assert model["encoder_weights"] == "torchvision_resnet18"
    # input: Synthia BGR with Synthia statistics; Cityscapes RGB with ImageNet statistics
    if synthia:
        assert model["channel_order"] == "bgr"
        np.testing.assert_allclose(np.array(model["mean"]) * 255, SYNTHIA_MEAN_255, rtol=1e-7)
        np.testing.assert_allclose(np.array(model["std"]) * 255, SYNTHIA_STD_255, rtol=1e-7)
    else:
        assert model["channel_order"] == "rgb" and model["mean"] == [0.485, 0.456, 0.406] and model["std"] == [0.229, 0.224, 0.225]
    # recall statistics over the global batch with several processes
    assert cfg["loss"]["sync"] is True and cfg["loss"]["statistics"] == "batch" and cfg["loss"]["soft"] is False
    assert cfg["protocol"] == "paper" and cfg["trainer"]["sync_batchnorm"] is True
    dataset = cfg["dataset"]
    if synthia:
        # split: per side/camera directory, random.seed(0), shuffle, int() cut-offs 70/10/20
        assert dataset["_target_"] == "recallseg.data.synthia.Synthia" and dataset["split_procedure"] == "authors"
        assert dataset["seed"] == 0 and dataset["split_fractions"] == [0.7, 0.1, 0.2]
        assert dataset["sequences"] == ["SYNTHIA-SEQS-05-SUMMER"] and dataset["sides"] is None and dataset["cameras"] is None
        assert dataset["void_as_class"] and dataset["resize"] == [384, 768] and dataset["train_transform"] is None
    else:
        # augmentation: jitter 0.5 (brightness, contrast, saturation in that order), flip, discrete scales, crop 769
        names = [t["_target_"].rsplit(".", 1)[1] for t in dataset["train_transform"]]
        assert names == ["ColorJitter", "ColorJitter", "ColorJitter", "HorizontalFlip", "RandomScaleCrop"]
        jitter = [{k: t[k] for k in ("brightness", "contrast", "saturation", "hue")} for t in dataset["train_transform"][:3]]
        assert jitter == [
            {"brightness": 0.5, "contrast": 0.0, "saturation": 0.0, "hue": 0.0},
            {"brightness": 0.0, "contrast": 0.5, "saturation": 0.0, "hue": 0.0},
            {"brightness": 0.0, "contrast": 0.0, "saturation": 0.5, "hue": 0.0},
        ]
        crop = dataset["train_transform"][-1]
        assert crop["height"] == crop["width"] == 769 and crop["scales"] == [0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
        assert dataset["size_divisor"] is None and dataset["class_set"] == "cityscapes19"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_paper_experiments_give_every_baseline_the_authors_settings(experiment):
    def loss(name: str) -> dict:
        return composed(f"experiment={experiment}", f"loss={name}")["loss"]

    assert loss("focal")["gamma"] == 1.0 and loss("focal")["alpha"] is None
    assert loss("lovasz")["per_image"] is True and loss("lovasz")["classes"] == "present"
    assert loss("class_balanced")["beta"] == "auto"
    assert loss("weighted_ce")["mode"] == "median_count"
    assert loss("soft_iou")["per_image"] is True and loss("soft_iou")["classes"] == "all"
    assert loss("ce")["_target_"].endswith("CrossEntropyLoss") and loss("ohem")["thresh"] == 0.7
    # a command-line key still wins over the protocol
    assert composed(f"experiment={experiment}", "loss=focal", "loss.gamma=3")["loss"]["gamma"] == 3
    # outside the experiments every loss keeps recallseg's own settings
    assert composed("loss=focal")["loss"]["gamma"] == 2.0 and composed("loss=lovasz")["loss"]["per_image"] is False
    assert composed("loss=recall")["loss"]["sync"] is False and composed()["protocol"] == "recallseg"


def test_the_paper_protocol_alone_applies_to_any_experiment():
    cfg = composed("protocol=paper", "loss=focal")
    assert cfg["loss"]["gamma"] == 1.0 and cfg["model"]["_target_"].startswith("segmentation_models_pytorch")


def test_class_balanced_auto_beta_is_n_minus_one_over_n_of_the_training_pixels():
    counts = torch.tensor([7_000_000.0, 2_500_000.0, 90_000.0, 40_000.0, 0.0])
    n = float(counts.sum())
    beta = (n - 1) / n
    raw = [(1 - beta) / (1 - beta**c) if c else 0.0 for c in counts.tolist()]  # float64 python
    present = [w for w in raw if w]
    expected = torch.tensor([w / (sum(present) / len(present)) for w in raw], dtype=torch.float64)
    context = LossContext(5, 255, class_pixel_counts=lambda: counts)
    weights = build_loss(composed("loss=class_balanced")["loss"], context).weights
    torch.testing.assert_close(weights.double(), expected, rtol=1e-5, atol=1e-7)
    # 0.999 on pixel counts: every class above ~37,000 pixels weighs exactly the same (plain CE)
    fixed = build_loss({"name": "class_balanced", "beta": 0.999}, context).weights
    assert torch.equal(fixed[:4], torch.ones(4)) and fixed[4] == 0


def test_median_frequency_is_eigen_and_fergus_and_median_count_is_inverse_frequency():
    from recallseg.pipeline.class_statistics import ClassStatistics

    counts = torch.tensor([600, 300, 100, 50, 0])
    image_pixels = torch.tensor([1000, 1000, 200, 1000, 0])  # class 2 fills half of the few images it is in
    stats = ClassStatistics(counts, image_pixels)
    context = LossContext(5, 255, class_statistics=lambda: stats)
    freq = [600 / 1000, 300 / 1000, 100 / 200, 50 / 1000]
    median = sorted(freq)[1:3]
    median = (median[0] + median[1]) / 2
    raw = [median / f for f in freq]
    expected = [w / (sum(raw) / 4) for w in raw] + [0.0]
    weights = build_loss({"name": "weighted_ce", "mode": "median_frequency"}, context).weights
    torch.testing.assert_close(weights.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-7)
    counted = build_loss({"name": "weighted_ce", "mode": "median_count"}, context).weights
    inverse = [1 / c for c in (600, 300, 100, 50)]
    expected = [w / (sum(inverse) / 4) for w in inverse] + [0.0]
    torch.testing.assert_close(counted.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-7)
    assert torch.equal(build_loss({"name": "weighted_ce", "mode": "median"}, context).weights, counted)  # the old name


# ------------------------------------------------------------------ the paper code's network


def test_authors_network_has_35_25_million_parameters_and_their_block_structure():
    from torchvision.models.resnet import Bottleneck

    model = build_model(composed("model=deeplab_authors")["model"], 19)
    assert sum(p.numel() for p in model.parameters()) == 35_252_403
    assert sum(p.numel() for p in model.encoder.parameters()) == 18_408_768
    encoder = model.encoder
    stages = [encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4]
    assert [len(stage) for stage in stages] == [2, 2, 2, 3]
    assert all(isinstance(block, Bottleneck) for stage in stages for block in stage)
    assert [stage[-1].conv3.out_channels for stage in stages] == [256, 512, 1024, 2048]
    assert [stage[0].conv2.stride for stage in stages] == [(1, 1), (2, 2), (2, 2), (1, 1)]
    assert [block.conv2.dilation for block in encoder.layer4] == [(2, 2), (4, 4), (8, 8)]  # multi-grid 2 x (1, 2, 4)
    assert [block.conv2.padding for block in encoder.layer4] == [(2, 2), (4, 4), (8, 8)]
    assert all(block.conv2.dilation == (1, 1) for stage in stages[:3] for block in stage)
    rates = [branch[0].dilation for branch in list(model.aspp.convs)[1:4]]
    assert rates == [(6, 6), (12, 12), (18, 18)]
    convs = [m for m in [*model.aspp.modules(), *model.decoder.modules()] if isinstance(m, torch.nn.Conv2d)]
    assert all(conv.groups == 1 for conv in convs)  # plain, not separable
    dropouts = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.5, 0.5, 0.1]  # ASPP projection, then the decoder's two 3x3 convolutions
    decoder_convs = [m for m in model.decoder if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in decoder_convs] == [(304, 256, (3, 3)), (256, 256, (3, 3)), (256, 19, (1, 1))]
    assert model.low_level[0].in_channels == 256 and model.low_level[0].out_channels == 48


@pytest.mark.slow
def test_authors_network_takes_any_size_and_trains_a_step_on_cpu():
    torch.manual_seed(0)
    model = build_model(composed("model=deeplab_authors")["model"], 5)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 77, 49)).shape == (1, 5, 77, 49)  # e.g. 769 crops: no output-stride rounding
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, target = torch.randn(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    target[:, :8] = 255
    before = model.decoder[-1].weight.detach().clone()
    loss = build_loss({"name": "recall"}, LossContext(5))(model(x), target)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.decoder[-1].weight)


def test_authors_network_is_trusted_in_a_stored_config():
    """A checkpoint's config is untrusted data: the network's _target_ lies inside recallseg."""
    model = build_model(composed("model=deeplab_authors")["model"], 3, trusted=False, offline=True)
    assert type(model).__name__ == "AuthorsDeepLabV3Plus"


def test_authors_encoder_is_an_smp_encoder():
    import segmentation_models_pytorch as smp

    import recallseg.models.authors_deeplab  # noqa: F401  (registers the encoder)

    encoder = smp.encoders.get_encoder("authors_resnet18", output_stride=16)
    features = encoder(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == [3, 64, 256, 512, 1024, 2048]
    assert [f.shape[-1] for f in features] == [64, 32, 16, 8, 4, 4]


def test_partial_imagenet_transplant_copies_tensors_matching_by_name_and_shape(tmp_path, monkeypatch):
    """Their initialisation: torchvision resnet18 tensors where name and shape match (43 parameter tensors)."""
    import torchvision

    from recallseg.models.authors_deeplab import TORCHVISION_RESNET18_URL

    torch.manual_seed(1)
    reference = torchvision.models.resnet18().state_dict()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(reference, checkpoints / TORCHVISION_RESNET18_URL.rsplit("/", 1)[1])  # what a download leaves in the cache
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    cfg = {**composed("model=deeplab_authors")["model"], "encoder_weights": "torchvision_resnet18"}
    torch.manual_seed(2)
    model = build_model(cfg, 19)
    own = model.encoder.state_dict()
    params = dict(model.encoder.named_parameters())
    matching = [k for k, v in reference.items() if k in own and own[k].shape == v.shape]
    assert sum(k in params for k in matching) == 43
    share = sum(params[k].numel() for k in matching if k in params) / sum(p.numel() for p in params.values())
    assert 0.34 < share < 0.345
    for name in matching:
        assert torch.equal(own[name], reference[name]), name
    assert not torch.equal(own["layer1.0.conv1.weight"][:, :, 0, 0], reference["layer1.0.conv1.weight"][:, :, 1, 1])
    assert own["layer4.0.conv3.weight"].shape != reference.get("layer4.0.conv2.weight", torch.empty(0)).shape


def test_partial_imagenet_transplant_offline_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def blocked(*args, **kwargs):
        raise OSError("network access blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    cfg = {**composed("model=deeplab_authors")["model"], "encoder_weights": "torchvision_resnet18"}
    with pytest.raises(UserError) as error:
        build_model(cfg, 19)
    message = str(error.value)
    assert "\n" not in message and "model.encoder_weights" in message and "resnet18-f37072fd.pth" in message
    assert "model.encoder_weights=null" in message and str(tmp_path / "empty") in message


def test_imagenet_weights_behind_a_network_that_never_answers_fail_within_the_probe(tmp_path, monkeypatch):
    """A firewall that drops packets: torch's download would wait about 2 minutes; each probe (the Hugging
    Face hub's, then torchvision's server) gives up after 3 s."""
    import time

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    def never_answers(*args, **kwargs):
        time.sleep(30)
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", never_answers)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *args, **kwargs: pytest.fail("downloaded without an answering server"))
    cfg = {**composed("model=deeplab_authors")["model"], "encoder_weights": "torchvision_resnet18"}
    started = time.monotonic()
    with pytest.raises(UserError, match="not in torch's hub cache and its server cannot be reached"):
        build_model(cfg, 19)
    assert time.monotonic() - started < 20


# ------------------------------------------------------------------ the paper code's Synthia split


def hand_split(names: list[str], split: str) -> list[str]:
    """Their procedure written out: seed python's random with 0, shuffle, truncate 0.7 n and 0.1 n."""
    files = sorted(names)
    random.seed(0)
    random.shuffle(files)
    n = len(files)
    n_train, n_val = int(0.7 * n), int(0.1 * n)
    return {"train": files[:n_train], "val": files[n_train : n_train + n_val], "test": files[n_train + n_val :]}[split]


def test_authors_synthia_split_is_per_directory_seeded_shuffle_with_int_cutoffs(tmp_path):
    from dataset_trees import SYNTHIA_SEQUENCE, make_synthia_seqs
    from recallseg.data.synthia import Synthia

    sides, cameras, frames = ("Stereo_Left", "Stereo_Right"), ("Omni_B", "Omni_F"), 13
    make_synthia_seqs(tmp_path, frames=frames, sides=sides, cameras=cameras, size=(8, 8))
    names = [f"{i:06d}.png" for i in range(frames)]
    hand = {split: hand_split(names, split) for split in ("train", "val", "test")}
    random.seed(1234)
    outside = random.random()
    random.seed(1234)
    chosen = {}
    for split in ("train", "val", "test"):
        dataset = Synthia(tmp_path, split, sides=sides, cameras=cameras, split_procedure="authors")
        got = {(s.image.parent.parent.name, s.image.parent.name, s.image.name) for s in dataset.samples}
        expected = {(side, camera, name) for side in sides for camera in cameras for name in hand[split]}
        assert got == expected, split
        assert all(s.label == tmp_path / SYNTHIA_SEQUENCE / "GT" / "LABELS" / s.image.parent.parent.name / s.image.parent.name / s.image.name for s in dataset.samples)
        chosen[split] = got
    assert [len(chosen[s]) for s in ("train", "val", "test")] == [4 * 9, 4 * 1, 4 * 3]  # int(9.1), int(1.3), the rest
    assert random.random() == outside  # the global random stream is left as it was
    # recallseg's own procedure (one permutation of all 52 frames) is another split
    own = {(s.image.parent.parent.name, s.image.parent.name, s.image.name) for s in Synthia(tmp_path, "train", sides=sides, cameras=cameras).samples}
    assert own != chosen["train"] and len(own) == round(0.7 * 52)


# ------------------------------------------------------------------ the paper code's Cityscapes augmentation


def test_cityscapes_paper_augmentation_crops_769_at_their_discrete_scales(tmp_path, monkeypatch):
    from dataset_trees import make_cityscapes
    from recallseg.pipeline.transforms import RandomScaleCrop

    make_cityscapes(tmp_path / "cityscapes", frames={"train": 1, "val": 1}, size=(300, 600))
    monkeypatch.setenv("RECALLSEG_DATA", str(tmp_path))
    cfg = composed("experiment=cityscapes_paper")["dataset"]
    dataset = build_dataset(cfg, "train", train=True)
    image, mask = dataset[(0, 3)]
    assert image.shape == (769, 769, 3) and mask.shape == (769, 769)
    crop = dataset.transform.transforms[-1]
    assert isinstance(crop, RandomScaleCrop) and crop.scales == (0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    crop.set_random_seed(0)
    drawn = {crop.get_params_dependent_on_data({"shape": (1024, 2048, 3)}, {})["scale"] for _ in range(200)}
    assert drawn == {0.75, 1.0, 1.25, 1.5, 1.75, 2.0}
    continuous = RandomScaleCrop(64, 64, scale=(0.75, 2.0))
    continuous.set_random_seed(0)
    assert len({continuous.get_params_dependent_on_data({"shape": (100, 100, 3)}, {})["scale"] for _ in range(20)}) == 20
