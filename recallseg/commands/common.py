"""What the key=value tools share: parsing their options, --help, and the exit status."""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from recallseg.errors import ConfigError, UserError, nearest


class ToolError(UserError):
    """Bad input to a tool; the message says what to fix."""


def parse_options(argv: Sequence[str], defaults: Mapping[str, Any], required: Sequence[str], usage: str) -> DictConfig:
    """``key=value`` arguments over ``defaults``; unknown keys get the nearest known one."""
    loose = [arg for arg in argv if "=" not in arg]
    if loose or not argv:
        raise ToolError(f"arguments are key=value pairs; usage: {usage}" + (f" (got {loose})" if loose else ""))
    try:
        given = OmegaConf.from_dotlist(list(argv))
    except Exception as error:
        raise ToolError(f"cannot read the arguments ({' '.join(str(error).split())}); usage: {usage}") from None
    for key in given:
        if key not in defaults:
            hint = nearest(str(key), list(defaults))
            raise ConfigError(str(key), "is not a known option", f"did you mean {hint}?" if hint else f"known: {', '.join(defaults)}")
    cfg = OmegaConf.merge(OmegaConf.create(dict(defaults)), given)
    missing = [key for key in required if OmegaConf.is_missing(cfg, key)]
    if missing:
        raise ToolError(f"missing {', '.join(k + '=...' for k in missing)}; usage: {usage}")
    return cfg


def wants_help(argv: Sequence[str], text: str) -> bool:
    """Print ``text`` for -h/--help."""
    if any(arg in ("-h", "--help") for arg in argv):
        print(text.strip())
        return True
    return False


def exit_code(run, argv: Sequence[str] | None) -> int:
    """Run ``run(argv)`` under ``user_errors``: 0, or 2 after a one-line error."""
    from recallseg.commands.user_errors import user_errors

    try:
        with user_errors():
            run(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0
