"""Training survives: exact resume, signals, non-finite numbers, and torchrun with several ranks."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY_OVERRIDES, read_json, run_entry_point
from recallseg.checkpoints.format import load_checkpoint

RUN = [o for o in TINY_OVERRIDES if not o.startswith(("trainer.max_iters", "trainer.val_interval"))]


def weights(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def assert_same_weights(a, b, exact=True):
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), f"{key} differs"
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")


@pytest.mark.slow
def test_k_iterations_plus_resumed_rest_equals_a_straight_run_bit_for_bit(tmp_path):
    common = [*RUN, "trainer.max_iters=5", "trainer.val_interval=3", "loss=recall", "loss.statistics=ema", "trainer.num_workers=1"]
    run_entry_point("train.py", *common, f"hydra.run.dir={tmp_path / 'straight'}")
    run_entry_point("train.py", *common, "trainer.stop_after=2", f"hydra.run.dir={tmp_path / 'split'}")
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["iteration"] == 2
    run_entry_point("train.py", *common, "resume=auto", f"hydra.run.dir={tmp_path / 'split'}")
    straight, split = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("straight", "split"))
    assert straight["iteration"] == split["iteration"] == 5
    assert_same_weights(straight["model"], split["model"])
    assert torch.equal(straight["loss"]["ema_counts"], split["loss"]["ema_counts"])  # loss state travels too
    for group_a, group_b in zip(straight["optimizer"]["state"].values(), split["optimizer"]["state"].values()):
        assert torch.equal(group_a["exp_avg"], group_b["exp_avg"])
    assert read_json(tmp_path / "straight" / "metrics.json")["mIoU"] == read_json(tmp_path / "split" / "metrics.json")["mIoU"]


def _train_until_signal(run_dir, sig, after_iteration, extra):
    """Start a run, send ``sig`` once it has logged ``after_iteration``, return the exit code."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *extra, f"hydra.run.dir={run_dir}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    output = []
    for line in proc.stdout:
        output.append(line)
        if f"iter {after_iteration}/" in line:
            proc.send_signal(sig)
            break
    output.extend(proc.stdout)
    code = proc.wait(timeout=120)
    return code, "".join(output)


@pytest.mark.slow
def test_sigterm_and_sigint_save_and_the_resumed_run_matches_an_uninterrupted_one(tmp_path):
    common = [*RUN, "trainer.max_iters=30", "trainer.val_interval=100", "trainer.log_interval=1"]
    run_entry_point("train.py", *common, f"hydra.run.dir={tmp_path / 'straight'}")
    interrupted = tmp_path / "interrupted"
    code, out = _train_until_signal(interrupted, signal.SIGTERM, 3, common)
    assert code == 143, out[-3000:]
    first_stop = load_checkpoint(interrupted / "checkpoints" / "last.pt")["iteration"]
    assert 3 <= first_stop < 30
    code, out = _train_until_signal(interrupted, signal.SIGINT, first_stop + 3, [*common, "resume=auto"])
    assert code == 130, out[-3000:]
    second_stop = load_checkpoint(interrupted / "checkpoints" / "last.pt")["iteration"]
    assert first_stop < second_stop < 30
    run_entry_point("train.py", *common, "resume=auto", f"hydra.run.dir={interrupted}")
    assert_same_weights(weights(tmp_path / "straight"), weights(interrupted))


NAN_LOSS = '''
import torch
from recallseg.losses import CrossEntropyLoss

class NanAtStep3(CrossEntropyLoss):
    calls = 0
    def forward(self, logits, target):
        type(self).calls += 1
        loss = super().forward(logits, target)
        return loss * float("nan") if type(self).calls == 3 else loss
'''


@pytest.fixture
def nan_loss_module(tmp_path):
    (tmp_path / "nan_loss.py").write_text(NAN_LOSS)
    return {"PYTHONPATH": str(tmp_path)}


@pytest.mark.slow
def test_nonfinite_loss_stops_with_the_iteration_named(tmp_path, nan_loss_module):
    result = run_entry_point(
        "train.py", *RUN, "trainer.max_iters=4", "trainer.val_interval=4", "trainer.log_interval=4", "loss=ce", "loss._target_=nan_loss.NanAtStep3",
        f"hydra.run.dir={tmp_path / 'run'}", env=nan_loss_module, check=False,
    )
    assert result.returncode != 0
    assert "non-finite training loss" in result.stderr and "first: 3" in result.stderr
    assert not (tmp_path / "run" / "checkpoints" / "best.pt").exists()  # a NaN never reaches best.pt


@pytest.mark.slow
def test_nonfinite_steps_can_be_skipped(tmp_path, nan_loss_module):
    result = run_entry_point(
        "train.py", *RUN, "trainer.max_iters=4", "trainer.val_interval=4", "trainer.log_interval=4", "loss=ce", "loss._target_=nan_loss.NanAtStep3",
        "trainer.nonfinite=skip", f"hydra.run.dir={tmp_path / 'run'}", env=nan_loss_module,
    )
    assert "skipped 1 of iterations 1..4 (first: 3)" in result.stdout + result.stderr
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


@pytest.mark.slow
def test_a_checkpoint_with_a_pickle_payload_is_refused_by_resume(tmp_path):
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pt"
    code = f"import os, torch\nclass P:\n    def __reduce__(self):\n        return (os.system, ('touch {marker}',))\ntorch.save({{'format': 'recallseg-checkpoint', 'x': P()}}, '{evil}')\n"
    subprocess.run([sys.executable, "-c", code], check=True)
    result = run_entry_point("train.py", *RUN, f"resume={evil}", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode != 0 and "refusing to load" in result.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_two_gloo_ranks_match_one_rank_on_the_global_batch(tmp_path):
    """2 CPU ranks with batch B reach the weights of 1 rank with batch 2B (BatchNorm frozen,
    dropout off, no ignore pixels: then per-rank means average to the global mean exactly)."""
    common = [
        *[o for o in RUN if not o.startswith("trainer.batch_size")],
        "trainer.max_iters=3", "trainer.val_interval=3", "loss=ce", "trainer.freeze_batchnorm=true",
        "+model.decoder_aspp_dropout=0.0", "dataset.ignore_regions=false",
    ]
    run_entry_point("train.py", *common, "trainer.batch_size=4", f"hydra.run.dir={tmp_path / 'one'}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", str(REPO / "train.py"),
         *common, "trainer.batch_size=2", f"hydra.run.dir={tmp_path / 'two'}"],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert_same_weights(weights(tmp_path / "one"), weights(tmp_path / "two"), exact=False)
    one, two = read_json(tmp_path / "one" / "metrics.json"), read_json(tmp_path / "two" / "metrics.json")
    assert two["mIoU"] == pytest.approx(one["mIoU"], abs=1e-3)  # sharded validation, all-reduced matrices
    assert (one["run"]["machine"]["processes"], two["run"]["machine"]["processes"]) == (1, 2)  # the run's record, written by rank 0
    for run in (one["run"], two["run"]):  # 4 images per iteration, over all ranks
        assert run["end"]["images_per_second"] == pytest.approx(4 * run["end"]["iterations_per_second"], rel=1e-2)


@pytest.mark.slow
def test_skipping_keeps_the_scaler_at_one_so_later_steps_are_exact(tmp_path):
    """Skipped steps must not shrink the loss scale (after ~140 halvings updates would turn inf)."""
    from hydra import compose, initialize_config_dir

    from conftest import CONFIG_DIR
    from recallseg.training.trainer import Trainer

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"output_dir={tmp_path}", *RUN, "loss=ce", "trainer.nonfinite=skip"])
    trainer = Trainer(cfg)
    images = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    masks = torch.randint(0, 9, (2, 64, 64))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if k.endswith("weight")}
    real_loss = trainer.criterion.forward
    trainer.criterion.forward = lambda logits, target: real_loss(logits, target) * float("nan")
    for _ in range(3):
        trainer.step(images, masks)
        assert trainer._found_inf.item() == 1  # the step was seen as skipped
    assert trainer.scaler.get_scale() == 1.0
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no update was applied


def test_each_rank_resumes_its_own_random_state(caplog):
    from recallseg.runtime.random_state import rng_state_for_rank

    states = [{"torch": torch.tensor([rank])} for rank in range(3)]
    checkpoint = {"rng": states[0], "rng_per_rank": states}
    assert [rng_state_for_rank(checkpoint, rank, 3)[0]["torch"].item() for rank in range(3)] == [0, 1, 2]
    assert all(rng_state_for_rank(checkpoint, rank, 3)[1] for rank in range(3))
    assert rng_state_for_rank({"rng": states[0]}, 0, 1) == (states[0], True)  # single process: no warning
    assert not caplog.records
    # Another number of ranks: rank 0's state for all (only rank 0's own, the others are
    # reseeded), and the user is told what that costs.
    assert rng_state_for_rank(checkpoint, 1, 2) == (states[0], False)
    assert rng_state_for_rank(checkpoint, 0, 2) == (states[0], True)
    assert "dropout will not repeat" in caplog.text


@pytest.mark.slow
def test_two_gloo_ranks_resume_bit_for_bit_with_dropout(tmp_path):
    """Each rank's dropout stream continues after a resume: 2 ranks stopped after 2 of 4
    iterations and resumed end with the weights of 2 ranks that ran 4 straight."""
    common = [
        *[o for o in RUN if not o.startswith("trainer.batch_size")],
        "trainer.max_iters=4", "trainer.val_interval=4", "trainer.batch_size=2", "loss=ce", "+model.decoder_aspp_dropout=0.5",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}

    def torchrun(*overrides):
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29534", str(REPO / "train.py"),
             *common, *overrides],
            cwd=REPO, capture_output=True, text=True, env=env, timeout=600,
        )
        assert result.returncode == 0, result.stderr[-5000:]

    torchrun(f"hydra.run.dir={tmp_path / 'straight'}")
    torchrun("trainer.stop_after=2", f"hydra.run.dir={tmp_path / 'split'}")
    assert len(load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["rng_per_rank"]) == 2
    torchrun("resume=auto", f"hydra.run.dir={tmp_path / 'split'}")
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "split"))
