"""A dataset and a model of the user's own package, outside recallseg: one module and one YAML
each in the user's config folder (``hydra.searchpath``); no recallseg file is edited. Their
checkpoint is then evaluated only when the user names their classes again for that run."""

import textwrap

import pytest

from conftest import TINY_OVERRIDES, read_json, run_entry_point

MODULE = '''
import numpy as np
from torch import nn
from recallseg.data import SegmentationDataset


class Halves(SegmentationDataset):
    """Left half dark (class 0), right half bright (class 1)."""
    classes = ("dark", "bright")
    palette = [(0, 0, 0), (255, 255, 255)]

    def __init__(self, split, transform=None, size=32, count=4):
        super().__init__(transform)
        self.size, self.count = size, count

    def __len__(self):
        return self.count

    def load(self, index):
        mask = np.zeros((self.size, self.size), np.uint8)
        mask[:, self.size // 2:] = 1
        return np.repeat((mask * 200 + 20)[..., None], 3, axis=2).astype(np.uint8), mask


class TinyNet(nn.Sequential):
    def __init__(self, classes, width=8):
        super().__init__(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, classes, 1))
'''


@pytest.mark.slow
def test_a_dataset_and_a_model_from_another_package_need_only_a_yaml_each(tmp_path, cache_env):
    (tmp_path / "my_project").mkdir()
    (tmp_path / "my_project" / "__init__.py").write_text("")
    (tmp_path / "my_project" / "parts.py").write_text(textwrap.dedent(MODULE))
    configs = tmp_path / "my_configs"
    (configs / "dataset").mkdir(parents=True)
    (configs / "model").mkdir()
    (configs / "dataset" / "halves.yaml").write_text("_target_: my_project.parts.Halves\nsize: 32\ncount: 4\ntrain_split: train\nval_split: val\nsplit: val\n")
    (configs / "model" / "tiny.yaml").write_text(
        "_target_: my_project.parts.TinyNet\nwidth: 8\nmean: [0.5, 0.5, 0.5]\nstd: [0.25, 0.25, 0.25]\nchannel_order: rgb\n"
    )
    runtime = [item for item in TINY_OVERRIDES if not item.startswith(("dataset.", "model."))]
    env = {**cache_env, "PYTHONPATH": str(tmp_path)}
    search = f"hydra.searchpath=[file://{configs}]"
    run = tmp_path / "run"
    run_entry_point("train.py", *runtime, "dataset=halves", "model=tiny", "loss=recall", search, f"hydra.run.dir={run}", env=env)
    log = (run / "train.log").read_text()
    assert "my_project.parts.Halves" in log and "my_project.parts.TinyNet" in log
    assert set(read_json(run / "metrics.json")["per_class"]) == {"dark", "bright"}

    checkpoint = run / "checkpoints" / "last.pt"
    refused = run_entry_point("evaluate.py", f"checkpoint={checkpoint}", f"output_dir={tmp_path / 'e1'}", env=env, check=False)
    assert refused.returncode == 2 and "never imports" in refused.stderr and "Traceback" not in refused.stderr
    run_entry_point(
        "evaluate.py", f"checkpoint={checkpoint}", f"output_dir={tmp_path / 'e2'}",
        "dataset._target_=my_project.parts.Halves", "model._target_=my_project.parts.TinyNet", env=env,
    )  # fmt: skip
    assert set(read_json(tmp_path / "e2" / "metrics.json")["per_class"]) == {"dark", "bright"}
