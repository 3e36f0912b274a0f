"""Whether the installed torch and torchvision belong together.

pip can pair a torch and a torchvision from different releases or builds (a CPU torch from one
index, a CUDA torchvision from another). The run then dies deep inside an import
(``operator torchvision::nms does not exist``) in a long traceback. Checked from the packages'
metadata, without importing either, before a command does any work.
"""

from __future__ import annotations

import functools
import re
from importlib import metadata

from recallseg.errors import UserError

# torchvision 0.(m + 15) is built against torch 2.m (0.23 for 2.8, ..., 0.29 for 2.14).
TORCHVISION_MINOR_OFFSET = 15


class MismatchedTorchError(UserError):
    """torch and torchvision come from different releases or builds."""


def _release_and_build(version: str) -> tuple[tuple[int, int], str | None]:
    """``"2.14.1+cu130"`` -> ``((2, 14), "cu130")``."""
    match = re.match(r"(\d+)\.(\d+)", version)
    major_minor = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    return major_minor, version.split("+", 1)[1] if "+" in version else None


def mismatch(torch_version: str, torchvision_version: str) -> str | None:
    """Why the two versions do not belong together, or None when they do."""
    (t_major, t_minor), t_build = _release_and_build(torch_version)
    (v_major, v_minor), v_build = _release_and_build(torchvision_version)
    if t_major == 2 and (v_major, v_minor) != (0, t_minor + TORCHVISION_MINOR_OFFSET):
        return f"torch {torch_version} needs torchvision 0.{t_minor + TORCHVISION_MINOR_OFFSET}.x"
    if t_build and v_build and t_build != v_build:
        return f"torch is a {t_build} build and torchvision a {v_build} build"
    return None


@functools.lru_cache(maxsize=1)
def check_torch_pair() -> None:
    """Raise a one-line ``MismatchedTorchError`` when torch and torchvision do not belong together."""
    try:
        torch_version, torchvision_version = metadata.version("torch"), metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        return  # a missing package names itself when imported
    problem = mismatch(torch_version, torchvision_version)
    if problem:
        raise MismatchedTorchError(
            f"torch {torch_version} and torchvision {torchvision_version} do not belong together ({problem}); "
            "install both from one index in one command, e.g. pip install --force-reinstall torch torchvision "
            "--index-url https://download.pytorch.org/whl/cpu (see docs/install.md)"
        )
