"""Every number a config gives must be finite.

A NaN compares false with every bound (``power < 0`` is False for ``nan``), so a range check
alone lets it through, and the run fails much later, blaming something else (the learning
rate, the data). No option of recallseg or its libraries means anything by NaN or infinity.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from recallseg.errors import ConfigError


def refuse_non_finite(value: Any, key: str) -> None:
    """Raise a ConfigError naming the first NaN or infinite number in ``value`` (nested sections and lists included)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"got {value}; every number in the config must be finite", f"set {key} to a finite number")
    if isinstance(value, Mapping):
        for name, item in value.items():
            refuse_non_finite(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            refuse_non_finite(item, f"{key}[{index}]")
