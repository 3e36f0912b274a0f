"""CUDA-only guarantees: the training step never synchronises with the host, and AMP is on by default.

Skipped on machines without CUDA (CI has none); run on a GPU machine before a release.
"""

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import CONFIG_DIR
from fused_kernel_cases import CHECKS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def make_trainer(tmp_path, *overrides):
    from recallseg.training.trainer import Trainer

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"output_dir={tmp_path}", "dataset.height=128", "dataset.width=256", "dataset.num_train=16", "dataset.num_val=4",
            "trainer.batch_size=4", "trainer.device=cuda", "trainer.num_workers=0", f"paths.cache_dir={tmp_path / 'cache'}", *overrides,
        ])
    return Trainer(cfg)


@pytest.mark.parametrize("loss", ["ce", "ce loss.kernel=triton", "weighted_ce", "weighted_ce loss.kernel=triton", "recall", "recall loss.kernel=triton", "focal", "ohem", "lovasz", "class_balanced"])
def test_training_step_has_no_host_sync(tmp_path, loss):
    name, *options = loss.split()
    trainer = make_trainer(tmp_path, f"loss={name}", *options)
    assert trainer.runtime.amp_dtype in (torch.bfloat16, torch.float16) and trainer.runtime.channels_last
    images = torch.randint(0, 256, (4, 128, 256, 3), dtype=torch.uint8).pin_memory()
    masks = torch.randint(0, 9, (4, 128, 256), dtype=torch.uint8).pin_memory()  # as the loader delivers them
    masks[:, :8] = 255
    for _ in range(3):  # warm-up: cuDNN autotuning and lazy initialisation may synchronise
        trainer.step(images, masks)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            loss_value = trainer.step(images, masks)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss_value).item()


def test_default_run_uses_bf16_and_learns(tmp_path):
    trainer = make_trainer(tmp_path, "trainer.max_iters=40", "trainer.val_interval=40", "trainer.log_interval=20")
    metrics = trainer.fit()
    assert trainer.runtime.amp_dtype == torch.bfloat16
    assert metrics["aAcc"] > 0.5


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_fused_kernel_on_cuda(check):
    check("cuda")


@pytest.mark.parametrize("loss", ["recall", "recall loss.kernel=triton"])
def test_cuda_graph_step_replays_the_eager_step(tmp_path, loss):
    """trainer.cuda_graph=true: the replayed steps follow the eager ones, and replay never syncs."""
    name, *options = loss.split()
    generator = torch.Generator().manual_seed(3)
    batches = [
        (torch.randint(0, 256, (4, 128, 256, 3), dtype=torch.uint8, generator=generator).pin_memory(),
         torch.randint(0, 9, (4, 128, 256), dtype=torch.uint8, generator=generator).pin_memory())
        for _ in range(8)
    ]
    losses = {}
    for graphed in (False, True):
        torch.manual_seed(0)
        trainer = make_trainer(tmp_path / str(graphed), f"loss={name}", *options, f"trainer.cuda_graph={graphed}")
        values = []
        for i, (images, masks) in enumerate(batches):
            if graphed and i == 6:
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")
            try:
                values.append(trainer.step(images, masks).clone())
            finally:
                torch.cuda.set_sync_debug_mode("default")
        losses[graphed] = torch.stack(values).float().cpu()
        if graphed:
            assert trainer._graphed.graph is not None, "the step was never captured"
    assert torch.isfinite(losses[True]).all()
    # Same initial weights and batches; bf16 and cuDNN algorithm choice allow small drift.
    torch.testing.assert_close(losses[True], losses[False], rtol=0.05, atol=0.05)
