"""What a run prints when something goes wrong: one clear line for a user's mistake, also from
a loader worker; fatal errors in train.log too; no line ever shares the progress bar's."""

import pytest

from conftest import TINY_OVERRIDES, run_entry_point
from recallseg.commands.user_errors import one_line

RUN = [o for o in TINY_OVERRIDES if not o.startswith(("trainer.max_iters", "trainer.val_interval", "trainer.num_workers"))]

FAILING_DATASET = '''
import os
from recallseg.data import DatasetError, SyntheticStreets

class FailsAtSample3(SyntheticStreets):
    def load(self, index):
        if self.split == "train" and index == 3:
            if os.environ.get("FAIL_WITH") == "bug":
                raise RuntimeError("boom in sample 3")
            raise DatasetError("label /data/masks/x.png holds mask values outside the known ones: 7\\n  (known: 0-8, 255)")
        return super().load(index)
'''


@pytest.fixture
def failing_dataset(tmp_path):
    (tmp_path / "failing_dataset.py").write_text(FAILING_DATASET)
    return str(tmp_path)


def last_segments(stream: str) -> list[str]:
    """What each terminal line ends up showing: the text after its last carriage return."""
    return [line.split("\r")[-1] for line in stream.split("\n")]


def run_failing(tmp_path, failing_dataset, fail_with):
    return run_entry_point(
        "train.py", *RUN, "trainer.max_iters=8", "trainer.val_interval=100", "trainer.num_workers=1", "loss=ce",
        "dataset._target_=failing_dataset.FailsAtSample3", f"hydra.run.dir={tmp_path / 'run'}", check=False,
        env={"PYTHONPATH": failing_dataset, "FAIL_WITH": fail_with},
    )  # fmt: skip


@pytest.mark.slow
def test_a_user_error_in_a_loader_worker_is_its_error_line_and_explanation_also_in_train_log(tmp_path, failing_dataset):
    result = run_failing(tmp_path, failing_dataset, "user")
    assert result.returncode == 2, result.stderr[-3000:]
    expected = "error: label /data/masks/x.png holds mask values outside the known ones: 7; stopped at iteration "
    segments = last_segments(result.stderr)
    (at,) = [i for i, segment in enumerate(segments) if segment.startswith("error: ")]  # on a line of its own
    line, explanation = segments[at], segments[at + 1]
    assert line.startswith(expected) and "resume=auto" in line, result.stderr[-2000:]  # and what became of last.pt
    assert explanation.strip() == "(known: 0-8, 255)" and explanation.startswith("  ")  # the message's own second line, below
    assert "Traceback" not in result.stderr and "DataLoader worker" not in result.stderr
    assert line in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.slow
def test_a_bug_keeps_its_traceback_and_reaches_train_log(tmp_path, failing_dataset):
    result = run_failing(tmp_path, failing_dataset, "bug")
    assert result.returncode == 1 and "RuntimeError" in result.stderr
    log = (tmp_path / "run" / "train.log").read_text()
    assert "training failed" in log and "boom in sample 3" in log and "Traceback" in log


@pytest.mark.slow
def test_log_lines_never_land_on_the_progress_bar_s_line(tmp_path):
    result = run_entry_point("train.py", *RUN, "trainer.max_iters=3", "trainer.val_interval=2", "loss=ce", "trainer.num_workers=0",
                             f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    output = result.stdout + "\n" + result.stderr
    records = [segment for segment in last_segments(output) if "[recallseg]" in segment]
    assert records and all(segment.startswith("[") for segment in records), [s for s in records if not s.startswith("[")][:3]
    assert output.count("][recallseg][INFO] - iter 1/3") == 1  # once, not also without the format


def test_one_line_unwraps_a_worker_error_spanning_lines():
    from recallseg.data import DatasetError

    wrapped = DatasetError(
        "Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in load\n    raise DatasetError("...")\n'
        "recallseg.errors.DatasetError: FolderDataset: 1 image(s) without a label:\n  images/a.png (expected label masks/a.png)\n"
    )
    assert one_line(wrapped) == "FolderDataset: 1 image(s) without a label: images/a.png (expected label masks/a.png)"


def test_the_users_situation_is_told_from_a_bug_in_one_place():
    import errno

    import torch

    from recallseg.errors import DatasetError, as_user_error

    def line(error):
        mapped = as_user_error(error)
        return None if mapped is None else one_line(mapped)

    assert line(DatasetError("images/a.png: cannot decode")) == "images/a.png: cannot decode"
    assert line(FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/x.png")) == "/data/x.png: No such file or directory; check the path"
    assert line(OSError(errno.ENOSPC, "No space left on device")).startswith("No space left on device; free space")
    assert line(OSError(errno.EDQUOT, "Disk quota exceeded")).startswith("Disk quota exceeded; free space within your quota")
    worker = PermissionError("Caught PermissionError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
                             "  File \"x.py\", line 1, in load\nPermissionError: [Errno 13] Permission denied: '/data/x.png'\n")  # fmt: skip
    assert line(worker) == "[Errno 13] Permission denied: '/data/x.png'"
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.50 GiB is free. Including non-PyTorch memory ...")
    assert line(oom) == (
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 1.50 GiB is free; "
        "lower the batch size or the image size, or use inference.mode=slide for large images"
    )
    assert line(MemoryError()).startswith("out of memory; lower the batch size")
    # Not the user's: a bug keeps its traceback.
    assert as_user_error(PermissionError(errno.EPERM, "Operation not permitted")) is None  # os.kill of another user's process
    assert as_user_error(ValueError("a bug")) is None and as_user_error(RuntimeError("CUDA error: an illegal memory access")) is None


def test_a_message_of_several_lines_keeps_them_indented_below_its_error_line(tmp_path, capsys):
    from recallseg.commands.user_errors import user_errors
    from recallseg.data.folder import FolderDataset

    (tmp_path / "images" / "train").mkdir(parents=True)
    with pytest.raises(SystemExit) as ended:
        with user_errors():
            FolderDataset(tmp_path, "train")
    assert ended.value.code == 2
    lines = capsys.readouterr().err.rstrip("\n").split("\n")
    assert lines[0] == f"error: classes file not found: {tmp_path / 'classes.yaml'}"
    assert lines[1:] == [
        "  it names the classes, e.g.",
        "    classes: [background, road, car]",
        "    palette: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]  # optional",
    ]


def test_a_worker_error_of_several_lines_is_unwrapped_with_its_lines():
    from recallseg.data import DatasetError
    from recallseg.errors import error_report

    wrapped = DatasetError(
        "Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in load\n    raise DatasetError("...")\n'
        "recallseg.errors.DatasetError: FolderDataset: 1 image(s) without a label:\n  images/a.png (expected label masks/a.png)\n"
    )
    assert error_report(wrapped) == "error: FolderDataset: 1 image(s) without a label:\n    images/a.png (expected label masks/a.png)"
    assert error_report(DatasetError("images/a.png:   cannot decode\n")) == "error: images/a.png: cannot decode"
    assert error_report(DatasetError("a: b\n\nexpected: \n  x/\n")) == "error: a: b\n  expected:\n    x/"  # no blank or trailing space
