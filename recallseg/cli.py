"""The commands' entry points: ``train.py``/``recallseg-train`` and ``evaluate.py``/``recallseg-eval``.

Each command first composes and checks its config (``recallseg.schema``) without Hydra writing
anything, so a mistake costs no run directory; then Hydra runs the task. A user's mistake
(``recallseg.errors.UserError``) prints one line, ``error: ...``, and exits with status 2, also
into the run's ``train.log`` where there is one; anything else keeps its traceback.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import traceback
from pathlib import Path
from typing import Callable, Iterator

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .config_files import config_dir
from .config_help import render_help
from .errors import ConfigError, UserError, nearest

CONFIG_PATH = str(config_dir())
# --help renders the groups and options from the YAML files (configs/hydra/help/recallseg.yaml).
OmegaConf.register_new_resolver("recallseg_help", lambda name, choices: render_help(name, choices), replace=True)
# Hydra's own flags: with these the command does not run a job (help, config printing) or sweeps.
HYDRA_FLAGS = (
    "-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-p", "--package", "--resolve", "-sc", "--shell-completion",
    "-m", "--multirun", "-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir", "--experimental-rerun", "--version",
)
# Sections that belong to an evaluation itself; other keys override the checkpoint's stored config.
EVAL_KEYS = ("checkpoint", "output_dir", "evaluation", "inference", "predictions", "hydra")


class Refused(UserError):
    """A refusal that must leave the run directory untouched (not even train.log)."""


def one_line(error: BaseException) -> str:
    """The user-facing line of an error; a DataLoader worker's error is unwrapped from its traceback."""
    text = str(error)
    if "Original Traceback" in text:  # re-raised from a loader worker: the traceback ends with "module.Type: message"
        lines = text.strip().splitlines()
        name = type(error).__name__
        starts = [i for i, line in enumerate(lines) if re.match(rf"^(?:[\w.]+\.)?{re.escape(name)}: ", line)]
        if starts:  # the message may span lines
            text = "\n".join(lines[starts[-1]:]).split(": ", 1)[1]
        else:
            last = [line for line in lines if line.strip()][-1]
            text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


def write_to_run_log(text: str, level: int = logging.ERROR) -> None:
    """Write ``text`` to the run's log file(s) only (train.log), not again to the console."""
    record = logging.LogRecord("recallseg", level, __file__, 0, text, None, None)
    for handler in logging.getLogger().handlers + logging.getLogger("recallseg").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@contextlib.contextmanager
def user_errors(log_to_run: bool = False) -> Iterator[None]:
    """Print a UserError (and the file-system and numeric ones a user causes) as one line; exit 2."""
    from .engine.resume_choice import RunRefused

    try:
        yield
    except (UserError, FileExistsError, FileNotFoundError, PermissionError, IsADirectoryError, FloatingPointError) as error:
        line = f"error: {one_line(error)}"
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)  # on its own line, never on a progress bar's
        sys.stderr.flush()
        if log_to_run and not isinstance(error, (Refused, RunRefused)):
            write_to_run_log(line)
        raise SystemExit(2) from None
    except Exception:  # a bug: its traceback reaches the console (Hydra prints it) and train.log
        if log_to_run:
            write_to_run_log("training failed:\n" + traceback.format_exc().rstrip())
        raise


def _hydra_message(error: Exception) -> ConfigError:
    """Hydra's composition errors as one line with what to do."""
    text = str(error)
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, choice = missing.groups()
        options = sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))
        hint = nearest(choice, options)
        return ConfigError(f"{group}={choice}", f"there is no {group} config {choice!r}", (f"did you mean {group}={hint}? " if hint else "") + f"choices: {', '.join(options)}")
    return ConfigError("command line", " ".join(text.split()), "see --help")


def _flat_keys(node, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items() if isinstance(node, dict) else []:
        path = f"{prefix}.{key}" if prefix else str(key)
        keys.append(path)
        if isinstance(value, dict):
            keys.extend(_flat_keys(value, path))
    return keys


def compose_checked(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose ``config_name`` with ``overrides`` the way Hydra will, turning its errors into ConfigErrors."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as error:
        raise ConfigError("command line", " ".join(str(error).split()), "write overrides as key=value") from None
    needs_output_dir = "\noutput_dir:" in (config_dir() / f"{config_name}.yaml").read_text()
    if needs_output_dir and not any(o.key_or_group == "output_dir" for o in parsed):
        overrides = [*overrides, "output_dir=unused"]  # ${hydra:...} cannot resolve outside a Hydra run
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONFIG_PATH, version_base="1.3"):
        try:
            base = compose(config_name, overrides=[o for o, p in zip(overrides, parsed) if p.is_add() is False and "=" in o and _is_group(o)])
            known = _flat_keys(OmegaConf.to_container(base, resolve=False))
        except Exception:
            known = []
        try:
            return compose(config_name, overrides=overrides)
        except Exception as error:
            key = re.search(r"Could not override '([^']+)'", str(error))
            if key:
                hint = nearest(key.group(1), known)
                raise ConfigError(key.group(1), "is not a known option", f"did you mean {hint}?" if hint else "see --help") from None
            raise _hydra_message(error) from None
        finally:
            GlobalHydra.instance().clear()


def _is_group(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return "." not in key and (config_dir() / key.split("@")[0]).is_dir()


def runs_a_job(argv: list[str]) -> bool:
    return not any(arg.split("=", 1)[0] in HYDRA_FLAGS for arg in argv)


# ---------------------------------------------------------------------------------------------
# train


def run_training(cfg: DictConfig) -> float:
    """The training task: check, refuse an existing run, build, record the config, train."""
    from .engine.resume_choice import refuse_existing_run
    from .engine.trainer import Trainer
    from .run_directory import record_config
    from .schema import validate_train_config

    with user_errors(log_to_run=True):
        config = OmegaConf.create(validate_train_config(cfg))
        if config.resume is None:
            refuse_existing_run(Path(config.output_dir) / "checkpoints")
        trainer = Trainer(config)
        trainer.choose_start()  # may refuse the run: before anything is written
        if trainer.runtime.is_main:
            record_config(Path(config.output_dir), config)
        metrics = trainer.fit()
    # The monitored value, for Hydra sweepers; NaN when the run stopped before validating.
    return metrics.get(config.trainer.monitor.removeprefix("val/"), float("nan"))


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _train_app(cfg: DictConfig) -> float:
    return run_training(cfg)


def train_main() -> None:
    """``python train.py ...`` and ``recallseg-train ...``."""
    from .run_directory import check_writable
    from .schema import validate_train_config

    argv = sys.argv[1:]
    if runs_a_job(argv):
        with user_errors():
            validate_train_config(compose_checked("train", argv))
            run_dirs = [arg.split("=", 1)[1] for arg in argv if arg.split("=", 1)[0] == "hydra.run.dir"]
            if run_dirs:  # before Hydra opens train.log in it
                check_writable(run_dirs[-1])
    _train_app()


# ---------------------------------------------------------------------------------------------
# evaluate

_stored_overrides: list[str] = []


def split_eval_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(evaluation's own arguments, overrides of the checkpoint's stored config)``."""
    own, stored = [], []
    for arg in argv:
        top = arg.split("=", 1)[0].lstrip("+~").split(".")[0].split("/")[0]
        (own if arg.startswith("-") or top in EVAL_KEYS else stored).append(arg)
    return own, stored


def run_evaluation(cfg: DictConfig) -> float:
    from .engine.checkpoint_evaluation import evaluate_checkpoint

    with user_errors():
        metrics = evaluate_checkpoint(cfg, _stored_overrides)
    return metrics["mIoU"]


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def _eval_app(cfg: DictConfig) -> float:
    return run_evaluation(cfg)


def eval_main() -> None:
    """``python evaluate.py checkpoint=... [key=value ...]`` and ``recallseg-eval ...``."""
    from .engine.checkpoint_config import checkpoint_config
    from .schema import validate_eval_config

    own, stored = split_eval_arguments(sys.argv[1:])
    if runs_a_job(own):
        with user_errors():
            eval_cfg = compose_checked("eval", own)
            validate_eval_config(eval_cfg)
            checkpoint_config(eval_cfg.checkpoint, stored)
    _stored_overrides[:] = stored
    sys.argv = [sys.argv[0], *own]
    _eval_app()


# Kept for scripts that import the task functions.
__all__ = ["train_main", "eval_main", "run_training", "run_evaluation", "user_errors", "compose_checked"]
