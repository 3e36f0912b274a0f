"""A 3-iteration train on every real dataset type, through train.py, from tiny trees in the public layouts.

One Hydra multirun over the four dataset configs; the trees sit where the configs look by
default, under ``$RECALLSEG_DATA`` (cityscapes/, synthia/, synthia_rand_cityscapes/, folder/).
The frame cache is on, so training reads through it in a DataLoader worker.
"""

import pytest

from conftest import read_json, run_entry_point
from dataset_trees import make_cityscapes, make_folder, make_synthia_rand, make_synthia_seqs

DATASETS = {"cityscapes": 19, "synthia": 16, "synthia_cityscapes": 16, "folder": 3}
SIZE = (64, 128)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data, out = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("runs")
    make_cityscapes(data / "cityscapes", frames={"train": 4, "val": 2}, size=SIZE)
    make_synthia_seqs(data / "synthia", frames=2, size=SIZE)
    make_synthia_rand(data / "synthia_rand_cityscapes", frames=10, size=SIZE)
    make_folder(data / "folder", frames={"train": 4, "val": 2}, size=SIZE)
    crop = "[{_target_:recallseg.pipeline.transforms.RandomScaleCrop,height:64,width:64,scale:[0.75,2.0],fill_mask:255}]"
    result = run_entry_point(
        "train.py", "-m", f"dataset={','.join(DATASETS)}",
        f"dataset.train_transform={crop}", "++dataset.resize=null", "++dataset.cache=true",  # ++: the sweep setup composes the default dataset
        "trainer.max_iters=3", "trainer.batch_size=2", "trainer.val_interval=3", "trainer.log_interval=1",
        "trainer.num_workers=1", "trainer.device=cpu", "trainer.amp=off", "model.encoder_weights=null",
        f"hydra.sweep.dir={out}", "hydra.sweep.subdir=${hydra:runtime.choices.dataset}",
        env={"RECALLSEG_DATA": str(data), "RECALLSEG_CACHE": str(out / "cache")}, timeout=600,
    )  # fmt: skip
    return out, result


@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASETS)
def test_three_iterations_train_and_validate(runs, dataset):
    out, _ = runs
    metrics = read_json(out / dataset / "metrics.json")
    assert metrics["iteration"] == 3
    assert len(metrics["per_class"]) == DATASETS[dataset]
    assert 0.0 <= metrics["mIoU"] <= 1.0
    assert list((out / "cache").glob("*-train-*/images.bin"))  # frames went through the cache
