"""Composing a command's config as Hydra will, before Hydra runs: one-line errors for the user's
mistakes (an unknown key with the nearest one, a missing group option), and the config helpers
every command shares (flattening a config to dotted keys)."""

from __future__ import annotations

import re
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from recallseg.config.files import config_dir
from recallseg.config.help import render_help
from recallseg.errors import ConfigError, nearest

CONFIG_PATH = str(config_dir())
# --help renders the groups and options from the YAML files (configs/hydra/help/recallseg.yaml).
OmegaConf.register_new_resolver("recallseg_help", lambda name, choices: render_help(name, choices), replace=True)
# Hydra's own flags: with these the command does not run a job (help, config printing) or sweeps.
HYDRA_FLAGS = (
    "-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-p", "--package", "--resolve", "-sc", "--shell-completion",
    "-m", "--multirun", "-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir", "--experimental-rerun", "--version",
)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": 1}`` for ``{"a": {"b": 1}}``: every leaf by its dotted key; lists stay values."""
    if not isinstance(node, Mapping):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def interpolation_links(cfg: DictConfig) -> dict[str, str]:
    """Each key whose value in ``cfg`` is another key's, as written (``evaluation.num_workers:
    ${trainer.num_workers}`` gives ``{"evaluation.num_workers": "trainer.num_workers"}``)."""
    raw = flatten(OmegaConf.to_container(cfg, resolve=False))
    return {key: match.group(1) for key, value in raw.items() if isinstance(value, str) and (match := re.fullmatch(r"\$\{([A-Za-z_][\w.]*)\}", value))}


def dotted_keys(node: Any) -> list[str]:
    """Every key of ``node``, sections included (``a``, ``a.b``), for "did you mean" hints."""
    keys: dict[str, None] = {}
    for leaf in flatten(node) if isinstance(node, Mapping) else {}:
        parts = leaf.split(".")
        keys.update({".".join(parts[: i + 1]): None for i in range(len(parts))})
    return list(keys)


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


def compose_checked(config_name: str, overrides: list[str], return_hydra_config: bool = False) -> DictConfig:
    """Compose ``config_name`` with ``overrides`` the way Hydra will, turning its errors into ConfigErrors
    (with Hydra's own section, which holds the option each group chose, if asked)."""
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
            known = dotted_keys(OmegaConf.to_container(base, resolve=False))
        except Exception:
            known = []
        try:
            return compose(config_name, overrides=overrides, return_hydra_config=return_hydra_config)
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


def composed_choices(config_name: str, overrides: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(the config as plain data, the option each config group chose)`` for ``overrides``
    (``output_dir`` aside: outside a Hydra run it has no value)."""
    cfg = compose_checked(config_name, overrides, return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    data = {key: value for key, value in OmegaConf.to_container(cfg, resolve=False).items() if key not in ("hydra", "output_dir")}
    return OmegaConf.to_container(OmegaConf.create(data), resolve=True), choices


def runs_a_job(argv: list[str]) -> bool:
    return not any(arg.split("=", 1)[0] in HYDRA_FLAGS for arg in argv)
