"""One error hierarchy for the project. Each subclass builds its message from what went wrong.

Foreign errors are translated at the boundary with ``raise ... from err``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BagError",
    "CmrFusionError",
    "ConfigError",
    "ConversionError",
    "MemoryStoreError",
    "ModelError",
    "WorkerError",
]


class CmrFusionError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(CmrFusionError):
    """A configuration value is missing, of the wrong type or out of range."""

    def __init__(self, key: str, value: Any, allowed: str, *, source: str | None = None) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"config key '{key}'{where}: got {value!r}; allowed: {allowed}")


class ConversionError(CmrFusionError):
    """A sensor message cannot be converted: names the message type, the field and the offending values."""

    def __init__(self, msg_type: str, field: str, problem: str) -> None:
        self.msg_type = msg_type
        self.field = field
        self.problem = problem
        super().__init__(f"{msg_type}.{field}: {problem}")


class ModelError(CmrFusionError):
    """An encoder model is missing, unreadable, or does not match its model card."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"model {path}: {problem}")


class MemoryStoreError(CmrFusionError):
    """The scene memory (or its directory on disk) is damaged, foreign, or used wrongly."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"scene memory {where}: {problem}")


class BagError(CmrFusionError):
    """A bag or an input dataset file is missing, unreadable, or not what was expected."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class WorkerError(CmrFusionError):
    """A worker process (offline look-ahead, :mod:`cmr_fusion_ros.core.workers`) failed a call or exited."""

    def __init__(self, worker: str, problem: str) -> None:
        self.worker = worker
        self.problem = problem
        super().__init__(f"worker {worker}: {problem}")
