"""scripts/class_stats.py counts the pixels of each class over the training split."""

import numpy as np

from conftest import read_json, run_entry_point
from dataset_trees import make_folder


def test_class_stats_counts_the_training_split(tmp_path):
    written = make_folder(tmp_path / "folder", frames={"train": 3, "val": 2})
    output = tmp_path / "stats.json"
    run_entry_point(
        "scripts/class_stats.py", "dataset=folder", f"dataset.root={tmp_path / 'folder'}", f"output={output}",
        "num_workers=0", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    stats = read_json(output)
    masks = np.stack([mask for _, mask in written["train"]])
    expected = [int((masks == c).sum()) for c in range(3)]
    assert stats["dataset"] == "FolderDataset" and stats["classes"] == ["background", "road", "car"]
    assert stats["pixel_counts"] == expected
    assert abs(sum(stats["frequencies"]) - 1.0) < 1e-9
