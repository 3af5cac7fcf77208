"""Validation of configuration values: each check raises :class:`~cmr_fusion_ros.core.errors.ConfigError` naming
the full key, the value and what is allowed (no ROS).

Two kinds, used by every config dataclass of the project (fusion, memory, policy, preprocessing, simulator):

* readers of a mapping (a YAML section): :func:`section`, :func:`no_unknown`, :func:`read_int`, :func:`read_float`,
  :func:`read_bool`, :func:`read_choice`, :func:`read_str` take the section, its key prefix (``memory.index``), the
  name and the default;
* checks of a value already read (``__post_init__``): :func:`require`, :func:`positive_int`,
  :func:`positive_float`, :func:`finite`, and :func:`positive` / :func:`non_negative` over attributes of an object.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cmr_fusion_ros.core.errors import ConfigError

__all__ = [
    "finite",
    "no_unknown",
    "non_negative",
    "positive",
    "positive_float",
    "positive_int",
    "read_bool",
    "read_choice",
    "read_float",
    "read_int",
    "read_str",
    "require",
    "section",
]


# --- readers of a mapping ---------------------------------------------------------------------------------------

def section(d: Any, key: str) -> Mapping[str, Any]:
    """``d`` as a mapping (None: empty)."""
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise ConfigError(key, d, "a mapping of keys to values")
    return d


def no_unknown(d: Mapping[str, Any], prefix: str, known: tuple[str, ...]) -> None:
    """Refuse keys outside ``known`` (a typo never falls back to a default silently)."""
    for k in d:
        if k not in known:
            raise ConfigError(f"{prefix}.{k}", d[k], f"a known key ({', '.join(known)})")


def read_int(d: Mapping[str, Any], prefix: str, name: str, default: int, lo: int, hi: int | None = None) -> int:
    value = d.get(name, default)
    allowed = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{prefix}.{name}", value, allowed)
    if value < lo or (hi is not None and value > hi):
        raise ConfigError(f"{prefix}.{name}", value, allowed)
    return int(value)


def read_float(d: Mapping[str, Any], prefix: str, name: str, default: float, lo: float,
               hi: float | None = None) -> float:
    value = d.get(name, default)
    allowed = f"a number in [{lo}, {hi}]" if hi is not None else f"a number >= {lo}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{prefix}.{name}", value, allowed)
    value = float(value)
    if not math.isfinite(value) or value < lo or (hi is not None and value > hi):
        raise ConfigError(f"{prefix}.{name}", value, allowed)
    return value


def read_bool(d: Mapping[str, Any], prefix: str, name: str, default: bool) -> bool:
    value = d.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{prefix}.{name}", value, "true or false")
    return value


def read_choice(d: Mapping[str, Any], prefix: str, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = d.get(name, default)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{prefix}.{name}", value, " | ".join(choices))
    return value


def read_str(d: Mapping[str, Any], prefix: str, name: str, default: str) -> str:
    value = d.get(name, default)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{prefix}.{name}", value, "a string")
    return value


# --- checks of a value -----------------------------------------------------------------------------------------

def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def positive_int(key: str, value: Any, upper: int = 4096) -> None:
    require(isinstance(value, int) and not isinstance(value, bool) and 0 < value <= upper, key, value,
            f"an integer in 1..{upper}")


def positive_float(key: str, value: Any) -> None:
    require(_number(value) and math.isfinite(value) and value > 0, key, value, "a finite number > 0")


def finite(key: str, value: Any) -> None:
    require(_number(value) and math.isfinite(value), key, value, "a finite number")


def positive(prefix: str, obj: Any, *names: str) -> None:
    """Each attribute ``names`` of ``obj`` is a number > 0 (key ``prefix.name``)."""
    for n in names:
        v = getattr(obj, n)
        require(_number(v) and v > 0, f"{prefix}.{n}", v, "a number > 0")


def non_negative(prefix: str, obj: Any, *names: str) -> None:
    """Each attribute ``names`` of ``obj`` is a number >= 0 (key ``prefix.name``)."""
    for n in names:
        v = getattr(obj, n)
        require(_number(v) and v >= 0, f"{prefix}.{n}", v, "a number >= 0")
