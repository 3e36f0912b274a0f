"""A stopped run continues from its run directory alone: the command its stop prints, run as it
is, ends bit for bit where an uninterrupted run with the same overrides ends, logs no warning,
and leaves TensorBoard holding each (tag, step) once. All through the ``train.py`` entry, in-process."""

import collections
import logging
import shlex
import sys

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import TINY_OVERRIDES
from recallseg.checkpoints.format import load_checkpoint
from recallseg.commands.train import train_main

# Far from the defaults (a rebuild from them would change sizes, seed, loss options and the
# network), with dropout and the EMA recall statistics so that the random and loss states matter.
RUN = [
    *[o for o in TINY_OVERRIDES if not o.startswith(("trainer.max_iters", "trainer.val_interval", "dataset.num_val"))],
    "dataset.num_val=2", "trainer.max_iters=4", "trainer.val_interval=2", "seed=3",
    "loss=recall", "loss.statistics=ema", "+model.decoder_aspp_dropout=0.5",
    "model.encoder_name=mobilenet_v2", "+model.decoder_channels=32",  # 2 M parameters: small checkpoints
]  # fmt: skip


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def train(argv, patch, records):
    """``python train.py <argv>``, in this process; the log records of the recallseg logger it wrote."""
    handler = Records()
    logging.getLogger("recallseg").addHandler(handler)  # Hydra reconfigures the root logger's handlers, not this one
    patch.setattr(sys, "argv", ["train.py", *argv])
    try:
        train_main()
    finally:
        logging.getLogger("recallseg").removeHandler(handler)
    records.append(handler.records)
    return handler.records


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run; a run of the same overrides stopped by trainer.stop_after=3 (after its
    validation at 2, so best.pt is there too); the command its stop printed, run as printed."""
    root = tmp_path_factory.mktemp("resume command")
    threads, logs = torch.get_num_threads(), []
    torch.set_num_threads(1)  # a few small convolutions: threads only contend on a shared 2-core machine
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("RECALLSEG_CACHE", str(root / "cache"))
            train([*RUN, f"hydra.run.dir={root / 'straight'}"], patch, logs)
            stop = train([*RUN, "trainer.stop_after=3", f"hydra.run.dir={root / 'my run'}"], patch, logs)
            line = next(r.getMessage() for r in stop if r.getMessage().startswith("stopped at iteration"))
            command = line.split("continue with: ", 1)[1]
            words = shlex.split(command)
            assert words[:2] == ["python", "train.py"], command
            resumed = train(words[2:], patch, logs)
    finally:
        torch.set_num_threads(threads)
    return root, line, resumed


def last(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def test_the_stop_prints_the_command_that_continues_quoted_for_the_shell(runs):
    root, line, _ = runs
    run_dir = (root / "my run").absolute()
    assert line == f"stopped at iteration 3; continue with: python train.py resume=auto 'hydra.run.dir=\"{run_dir}\"'"


def test_the_printed_command_ends_bit_for_bit_where_an_uninterrupted_run_ends(runs):
    root, _, _ = runs
    straight, resumed = last(root / "straight"), last(root / "my run")
    assert straight["iteration"] == resumed["iteration"] == 4
    for part in ("model", "loss"):  # the loss: its EMA recall statistics
        assert straight[part].keys() == resumed[part].keys()
        for key in straight[part]:
            assert torch.equal(straight[part][key], resumed[part][key]), f"{part} {key} differs"
    for index, state in straight["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, resumed["optimizer"]["state"][index][key]), f"optimizer state {index} {key} differs"
    assert straight["optimizer"]["param_groups"] == resumed["optimizer"]["param_groups"]
    assert straight["scheduler"] == resumed["scheduler"]
    place = ("output_dir", "resume")
    assert {k: v for k, v in straight["config"].items() if k not in place} == {k: v for k, v in resumed["config"].items() if k not in place}


def test_the_resume_logs_no_warning(runs):
    _, _, resumed = runs
    messages = [r.getMessage() for r in resumed]
    assert any(m.startswith("resumed from") and m.endswith("at iteration 3") for m in messages), messages
    assert [m for r, m in zip(resumed, messages) if r.levelno >= logging.WARNING] == []
    assert not [m for m in messages if m.startswith("resume:")]  # nothing typed, nothing changed


def test_the_run_directory_keeps_how_the_run_was_started_and_records_the_config_it_trains_with(runs):
    root, _, _ = runs
    record = OmegaConf.load(root / "my run" / ".hydra" / "config.yaml")
    assert record.trainer.stop_after is None and record.seed == 3 and record.resume == "auto"
    started = list(OmegaConf.load(root / "my run" / ".hydra" / "overrides.yaml"))
    assert started == [*RUN, "trainer.stop_after=3"]  # not the resume's own command line
    assert OmegaConf.load(root / "my run" / ".hydra" / "hydra.yaml").hydra.runtime.choices.loss == "recall"


def scalar_steps(run_dir):
    """Every (tag, step) of the run's event files, counted over all of them."""
    counts = collections.Counter()
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            counts.update((value.tag, event.step) for value in event.summary.value)
    return counts


def shown_steps(run_dir):
    """The (tag, step) pairs TensorBoard shows (after it purged what a resumed run redid)."""
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    return {(tag, e.step) for tag in tags["scalars"] for e in events.Scalars(tag)} | {
        (tag, e.step) for tag in tags["images"] for e in events.Images(tag)
    }


def test_tensorboard_holds_each_step_once_after_the_resume(runs):
    root, _, _ = runs
    written = scalar_steps(root / "my run")
    assert [key for key, n in written.items() if n > 1] == []
    assert {step for _, step in written} == {1, 2, 3, 4}
    assert shown_steps(root / "my run") == set(written)  # nothing of the stopped invocation hidden
    assert set(written) == set(scalar_steps(root / "straight"))


def test_a_key_of_the_stored_run_that_the_defaults_lack_is_set_with_a_double_plus():
    from recallseg.commands.train import compose_resumable
    from recallseg.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        compose_resumable(["resume=auto", "dataset.root=/data/moved"])  # the default dataset has no root
    assert str(info.value) == (
        "dataset.root: is not a key of the default config; to set a key of the resumed run's stored config that the "
        "defaults lack, write ++dataset.root=<value>"
    )
    with pytest.raises(ConfigError, match="dataset.root: is not a known option"):
        compose_resumable(["dataset.root=/data/moved"])  # not a resume: the plain refusal
    assert compose_resumable(["resume=auto", "++dataset.root=/data/moved"]).dataset.root == "/data/moved"


def test_a_resume_that_types_a_key_again_moves_the_keys_that_follow_it(tmp_path, monkeypatch):
    """``evaluation.num_workers: ${trainer.num_workers}``: typing the loader processes again on resume sets both."""
    logs = []
    monkeypatch.setenv("RECALLSEG_CACHE", str(tmp_path / "cache"))
    small = [o for o in RUN if not o.startswith(("trainer.max_iters", "trainer.val_interval"))]
    run = f"hydra.run.dir={tmp_path / 'run'}"
    train([*small, "trainer.max_iters=2", "trainer.val_interval=1", "trainer.stop_after=1", run], monkeypatch, logs)
    train(["resume=auto", "trainer.num_workers=1", run], monkeypatch, logs)
    record = OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml")
    assert (record.trainer.num_workers, record.evaluation.num_workers) == (1, 1)
