"""Building blocks of the trainer: schedule, data stream, normalisation, checkpoints, model errors."""

import itertools

import pytest
import torch

from recallseg.pipeline.loaders import TrainingStream
from recallseg.checkpoints.format import CheckpointError, load_checkpoint, save_checkpoint
from recallseg.training.optim import ConstantSchedule, PolySchedule, build_optimizer, build_scheduler
from recallseg.runtime.device import Runtime, resolve_amp
from recallseg.runtime.normalize import Normalizer
from recallseg.losses import class_weights_from_counts
from recallseg.models import build_model


def test_poly_schedule_with_warmup_matches_formula():
    assert PolySchedule(power=0.9).factor(0, 100) == 1.0
    assert PolySchedule(power=0.9).factor(50, 100) == pytest.approx(0.5**0.9)
    assert PolySchedule().factor(100, 100) == 0.0
    # warmup multiplies: linear from warmup_ratio at 0 to 1 at warmup_iters
    assert PolySchedule(warmup_iters=10, warmup_ratio=0.1).factor(0, 100) == pytest.approx(0.1)
    assert ConstantSchedule(warmup_iters=10, warmup_ratio=0.1).factor(5, 100) == pytest.approx(0.55)
    assert ConstantSchedule(warmup_iters=10).factor(10, 100) == 1.0
    with pytest.raises(ValueError, match="warmup_ratio"):
        PolySchedule(warmup_ratio=2.0)


def test_scheduler_steps_per_iteration():
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = build_optimizer({"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9, "nesterov": True}, params, torch.device("cpu"))
    sched = build_scheduler({"_target_": "recallseg.training.optim.PolySchedule", "power": 1.0}, opt, max_iters=4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1, 0.075, 0.05, 0.025])
    assert opt.param_groups[0]["nesterov"] is True


def test_training_stream_resumes_at_any_sample_and_shards_disjointly():
    full = list(itertools.islice(iter(TrainingStream(10, seed=1)), 35))
    resumed = list(itertools.islice(iter(TrainingStream(10, seed=1, start=17)), 18))
    assert resumed == full[17:]
    first_epoch = sorted(index for index, _ in full[:10])
    assert first_epoch == list(range(10))  # an epoch is a permutation
    assert [i for i, _ in full[:10]] != [i for i, _ in full[10:20]]  # reshuffled per epoch
    rank0 = [i for i, _ in itertools.islice(iter(TrainingStream(10, seed=1, rank=0, world_size=2)), 5)]
    rank1 = [i for i, _ in itertools.islice(iter(TrainingStream(10, seed=1, rank=1, world_size=2)), 5)]
    assert sorted(rank0 + rank1) == list(range(10))
    # The first epoch is the permutation DistributedSampler would draw (a single process's
    # stream did not change when the ranks stopped sharding through it).
    generator = torch.Generator().manual_seed(1)
    assert [i for i, _ in full[:10]] == torch.randperm(10, generator=generator).tolist()


@pytest.mark.parametrize("length", [7, 8])
def test_three_ranks_together_see_the_one_rank_stream_whatever_the_length(length):
    """Rank r's k-th key is the one-rank stream's (3k + r)-th, across epoch boundaries and with
    a dataset length that 3 does not divide (no padding, no repeated samples within an epoch)."""
    single = list(itertools.islice(iter(TrainingStream(length, seed=4)), 30))
    ranks = [list(itertools.islice(iter(TrainingStream(length, seed=4, rank=r, world_size=3, start=2)), 8)) for r in range(3)]
    for k in range(8):
        for r in range(3):
            assert ranks[r][k] == single[3 * (k + 2) + r]
    with pytest.raises(ValueError, match="empty"):
        TrainingStream(0, seed=0)


def test_normalizer_matches_reference_and_can_be_channels_last():
    images = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    expected = (images.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    for channels_last in (False, True):
        out = Normalizer(mean, std, Runtime(torch.device("cpu"), None, channels_last))(images)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_amp_resolution():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ValueError, match="trainer.amp"):
        resolve_amp("fp8", cpu)


def test_class_weights_modes_match_hand_computation():
    counts = [600, 300, 100, 0]
    inverse = class_weights_from_counts(counts, "inverse")
    raw = torch.tensor([1 / 0.6, 1 / 0.3, 1 / 0.1], dtype=torch.float64)
    torch.testing.assert_close(inverse[:3].double(), raw / raw.mean(), rtol=1e-6, atol=1e-6)
    assert inverse[3] == 0  # absent class: weight 0, not inf
    median = class_weights_from_counts(counts, "median")
    raw = torch.tensor([0.3 / 0.6, 1.0, 0.3 / 0.1], dtype=torch.float64)
    torch.testing.assert_close(median[:3].double(), raw / raw.mean(), rtol=1e-6, atol=1e-6)
    beta = 0.99
    effective = class_weights_from_counts(counts, "effective_number", beta=beta)
    raw = torch.tensor([(1 - beta) / (1 - beta**n) for n in counts[:3]], dtype=torch.float64)
    torch.testing.assert_close(effective[:3].double(), raw / raw.mean(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="unknown class weight mode"):
        class_weights_from_counts(counts, "sqrt")


def test_checkpoint_roundtrip_and_atomic_replace(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "iteration": 3, "config": {"a": [1, 2]}}, path)
    state = load_checkpoint(path)
    assert state["iteration"] == 3 and torch.equal(state["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_checkpoint_with_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "recallseg-checkpoint", "model": _Payload(str(marker))}, evil)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_bad_checkpoints_get_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a recallseg checkpoint"):
        load_checkpoint(foreign)


def test_default_model_is_deeplabv3plus_resnet18_at_stride_16():
    cfg = {
        "_target_": "segmentation_models_pytorch.create_model", "arch": "DeepLabV3Plus", "encoder_name": "resnet18",
        "encoder_weights": None, "encoder_output_stride": 16, "mean": [0] * 3, "std": [1] * 3,
    }  # fmt: skip
    model = build_model(cfg, num_classes=5).eval()
    assert type(model).__name__ == "DeepLabV3Plus"
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 96))
    assert out.shape == (1, 5, 64, 96)
    # output stride 16: the last encoder stage is dilated, its feature map is 1/16 of the input
    features = model.encoder(torch.zeros(1, 3, 64, 96))
    assert features[-1].shape[-2:] == (4, 6)


def test_unreachable_encoder_weights_give_a_message_that_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # The hub reads its environment once, at import: set its constants too, or the test waits
    # ~20 s on network timeouts (and could find weights in the user's own cache).
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    from recallseg.errors import UserError

    with pytest.raises(UserError) as info:
        build_model({"_target_": "segmentation_models_pytorch.create_model", "arch": "DeepLabV3Plus", "encoder_name": "resnet18", "encoder_weights": "imagenet"}, 3)
    message = str(info.value)
    assert "model.encoder_weights=null" in message and "pre-download" in message and "resnet18" in message and "\n" not in message


def test_cuda_graph_option_refuses_what_cannot_be_captured():
    from recallseg.training.cuda_graph import check_graph_support

    cpu = Runtime(torch.device("cpu"), None, False)
    with pytest.raises(ValueError, match="needs CUDA"):
        check_graph_support(cpu, "stop", "torch.optim.AdamW")
    fp16_ddp = Runtime(torch.device("cpu"), torch.float16, True, rank=0, world_size=2)
    with pytest.raises(ValueError) as info:
        check_graph_support(fp16_ddp, "skip", "torch.optim.RMSprop")
    for part in ("torchrun", "GradScaler", "nonfinite=stop", "RMSprop"):
        assert part in str(info.value)


def test_capturable_optimizer_keeps_lr_in_a_tensor_the_scheduler_fills():
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = build_optimizer({"_target_": "torch.optim.AdamW", "lr": 0.1}, params, torch.device("cpu"), capturable=True)
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor)
    sched = build_scheduler({"_target_": "recallseg.training.optim.PolySchedule", "power": 1.0}, opt, max_iters=4)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] is lr  # filled in place, so a captured graph sees the new value
    assert float(lr) == pytest.approx(0.075)


def test_atomic_write_replaces_whole_files_and_keeps_the_old_one_on_error(tmp_path):
    from recallseg.atomic_files import atomic_write

    target = tmp_path / "sub" / "metrics.json"
    with atomic_write(target) as handle:
        handle.write("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(target) as handle:
            handle.write("half of the sec")
            raise RuntimeError("disk full")
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"], "no temporary file may be left behind"
    with atomic_write(target, "wb") as handle:
        handle.write(b"second")
    assert target.read_bytes() == b"second"


def test_normalizer_bgr_hands_the_network_reversed_channels_with_mean_std_in_that_order():
    images = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8)
    mean, std = [0.2, 0.4, 0.6], [0.1, 0.3, 0.5]  # in the network's (B, G, R) order
    bgr = images.flip(-1).permute(0, 3, 1, 2).float()
    expected = (bgr / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    for channels_last in (False, True):
        runtime = Runtime(torch.device("cpu"), None, channels_last)
        out = Normalizer.for_model({"mean": mean, "std": std, "channel_order": "bgr"}, runtime)(images)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    rgb = Normalizer.for_model({"mean": mean, "std": std}, Runtime(torch.device("cpu"), None, False))(images)  # older configs: rgb
    assert not torch.allclose(rgb, expected)
