"""What a training run records about itself in ``<run dir>/.hydra/``.

Hydra's own writing is off (``hydra.output_subdir: null``): recallseg writes the same three
files once the config is valid and the run accepted, so a refused invocation leaves an
existing run directory exactly as it was.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from recallseg.atomic_files import atomic_write
from recallseg.errors import UserError


class RunDirectoryError(UserError):
    """The run directory cannot be written."""


def check_writable(directory: str | Path) -> None:
    """Create ``directory`` if needed and write (then remove) a file in it, so that a read-only
    run directory stops the run at its start instead of at its first checkpoint."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise RunDirectoryError(
            f"cannot write to {directory} ({error.strerror or type(error).__name__}): checkpoints and logs go there; "
            "make it writable or choose another hydra.run.dir"
        ) from None


def record_config(run_dir: Path, cfg: DictConfig) -> None:
    """``config.yaml`` (the resolved config), ``overrides.yaml`` and ``hydra.yaml`` (with the chosen groups)."""
    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    files = {"config.yaml": OmegaConf.to_yaml(cfg)}
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        files["overrides.yaml"] = OmegaConf.to_yaml(OmegaConf.create(list(hydra_cfg.overrides.task)))
        files["hydra.yaml"] = OmegaConf.to_yaml({"hydra": {"runtime": {"choices": OmegaConf.to_container(hydra_cfg.runtime.choices)}}})
    for name, text in files.items():
        with atomic_write(folder / name) as handle:
            handle.write(text)
