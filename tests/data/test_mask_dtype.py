"""Masks cross the loader in their dataset's compact dtype and become int64 only on the device."""

import numpy as np
import pytest
import torch

from dataset_trees import random_image, random_labels, write_array, write_rgb
from recallseg.pipeline import CachedDataset
from recallseg.data import FolderDataset, SegmentationDataset, SyntheticStreets
from recallseg.pipeline.loaders import train_loader
from recallseg.evaluation.samples import evaluation_loader, evaluation_samples
from recallseg.data.masks import compact_mask_dtype, to_mask_dtype
from recallseg.pipeline.transforms import build_transform


@pytest.mark.parametrize(
    "num_classes, ignore_index, expected",
    [
        (19, 255, np.uint8),  # Cityscapes, Synthia, synthetic, folder defaults
        (256, 255, np.uint8),  # ignore 255 may sit right after the last id
        (9, -1, np.int16),
        (300, 255, np.int16),
        (9, 300, np.int16),
        (40000, 65535, np.int32),
    ],
)
def test_the_compact_dtype_holds_every_train_id_and_the_ignore_index(num_classes, ignore_index, expected):
    assert compact_mask_dtype(num_classes, ignore_index) == np.dtype(expected)


def test_the_default_ignore_index_gives_uint8_batches_from_worker_processes():
    dataset = SyntheticStreets("train", 64, 64, num_train=4)
    images, masks = next(iter(train_loader(dataset, batch_size=2, seed=0, num_workers=1)))
    assert images.dtype == torch.uint8 and masks.dtype == torch.uint8 and masks.shape == (2, 64, 64)
    values = set(torch.unique(masks).tolist())
    assert 255 in values and values <= set(range(9)) | {255}
    batch = next(iter(evaluation_loader(evaluation_samples({}, SyntheticStreets("val", 64, 64, num_val=2), False), batch_size=2)))
    assert batch["mask"].dtype == torch.uint8 and batch["mask"].shape == (2, 64, 64)


def make_wide_folder(root, ignore_index, size=(20, 30)):
    """A FolderDataset tree whose ignore index does not fit uint8 (written as 16-bit PNGs when it is > 255)."""
    rng = np.random.default_rng(1)
    (root / "classes.yaml").write_text("classes: [background, road, car]\n")
    written = []
    for i in range(2):
        write_rgb(root / "images" / "train" / f"{i}.png", random_image(rng, *size))
        values = [0, 1, 2] + ([ignore_index] if ignore_index >= 0 else [])
        mask = random_labels(rng, *size, values=values, block=4).astype(np.uint16)
        write_array(root / "masks" / "train" / f"{i}.png", mask)
        written.append(mask.astype(np.int64))
    return written


@pytest.mark.parametrize("ignore_index", [-1, 300])
def test_an_ignore_index_beyond_uint8_gives_int16_batches_with_values_intact(tmp_path, ignore_index):
    written = make_wide_folder(tmp_path, ignore_index)
    dataset = FolderDataset(tmp_path, "train", ignore_index=ignore_index)
    # 20x30 frames padded to 32x32 with the ignore index: the padding must survive as -1 / 300.
    dataset.transform = build_transform([], size_divisor=32, ignore_index=ignore_index)
    _, masks = next(iter(train_loader(dataset, batch_size=2, seed=0, num_workers=1)))
    assert dataset.mask_dtype() == np.int16 and masks.dtype == torch.int16 and masks.shape == (2, 32, 32)
    for mask in masks.numpy():
        assert any(np.array_equal(mask[:20, :30], w) for w in written)  # train ids and ignore pixels unchanged
        assert (mask[20:] == ignore_index).all() and (mask[:, 30:] == ignore_index).all()
    cached = CachedDataset(FolderDataset(tmp_path, "train", ignore_index=ignore_index), tmp_path / "cache")
    for index in range(2):
        assert cached[index][1].dtype == np.int16 and np.array_equal(cached[index][1], dataset.load(index)[1])
    assert cached.cache.mask_dtype == np.int16


def test_unknown_values_in_a_wide_mask_are_still_named_with_the_file(tmp_path):
    make_wide_folder(tmp_path, 300)
    with pytest.raises(ValueError, match=r"label .*0\.png holds mask values .* outside the known ones: 300"):
        FolderDataset(tmp_path, "train")[0]  # 300 is neither a class nor the default ignore index 255


class WideMasks(SegmentationDataset):
    """A user dataset whose ``load`` returns int64 masks, as the contract used to ask."""

    classes = ("a", "b", "c")

    def __init__(self, masks):
        super().__init__()
        self.masks = masks

    def __len__(self):
        return len(self.masks)

    def load(self, index):
        return np.zeros((*self.masks[index].shape, 3), np.uint8), self.masks[index]


def test_int64_masks_of_a_user_dataset_are_narrowed_or_rejected_by_name():
    good = np.array([[0, 1], [2, 255]], dtype=np.int64)
    dataset = WideMasks([good, np.array([[0, 300], [-2, 1]], dtype=np.int64)])
    mask = dataset[0][1]
    assert mask.dtype == np.uint8 and np.array_equal(mask, good)
    # A plain cast would wrap 300 to 44 and -2 to 254 (a "valid" ignore-like value): refused instead.
    with pytest.raises(ValueError, match=r"WideMasks\[1\]: mask values -2, 300 are neither train ids \(0\.\.2\) nor the ignore index \(255\)"):
        dataset[1]
    assert to_mask_dtype(np.array([[-1, 2]]), 3, -1, "x").dtype == np.int16


@pytest.fixture(scope="module")
def trainers(tmp_path_factory):
    """Two identically initialised trainers on the synthetic dataset."""
    from hydra import compose, initialize_config_dir

    from conftest import CONFIG_DIR, TINY_OVERRIDES
    from recallseg.training.trainer import Trainer

    root = tmp_path_factory.mktemp("mask_dtype")
    built = []
    for name in ("compact", "int64"):
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[f"output_dir={root / name}", *TINY_OVERRIDES, "loss=recall", f"paths.cache_dir={root / 'cache'}"])
        built.append(Trainer(cfg))
    return built


@pytest.mark.slow
def test_training_steps_and_evaluation_match_int64_masks(trainers):
    from recallseg.evaluation.loop import evaluate

    compact, wide = trainers
    targets = []
    forward = compact.criterion.forward
    compact.criterion.forward = lambda logits, target: targets.append(target.dtype) or forward(logits, target)
    loader = iter(train_loader(compact.train_set, batch_size=2, seed=0))
    for _ in range(2):
        images, masks = next(loader)
        assert masks.dtype == torch.uint8
        torch.manual_seed(1)
        loss = compact.step(images, masks)
        torch.manual_seed(1)
        assert torch.equal(loss, wide.step(images, masks.long()))
    assert targets == [torch.int64, torch.int64]  # the loss still receives class indices as int64
    for key, value in compact.model.state_dict().items():
        assert torch.equal(value, wide.model.state_dict()[key]), key

    batches = list(evaluation_loader(compact.validation_samples, batch_size=2))
    assert all(batch["mask"].dtype == torch.uint8 for batch in batches)
    args = (compact.normalizer, compact.runtime, compact.num_classes, compact.ignore_index)
    matrix = evaluate(compact.model, batches, *args, progress=False).compute()
    reference = evaluate(compact.model, [{**batch, "mask": batch["mask"].long()} for batch in batches], *args, progress=False).compute()
    assert matrix.sum() > 0 and torch.equal(matrix, reference)


def test_a_captured_step_refuses_masks_of_another_dtype():
    from recallseg.training.cuda_graph import GraphedStep

    graphed = GraphedStep(lambda images, masks: masks.sum(), torch.device("cpu"))
    graphed.graph = object()  # as if captured: only the checks before the copy run (no CUDA here)
    graphed.static_images = torch.zeros(2, 8, 8, 3, dtype=torch.uint8)
    graphed.static_masks = torch.zeros(2, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="masks of one dtype; got torch.int64 after capturing torch.uint8.*mask_dtype.*cuda_graph=false"):
        graphed(graphed.static_images, torch.zeros(2, 8, 8, dtype=torch.int64))
