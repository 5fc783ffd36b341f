"""Moved: the management API's response models live in `kairos_core.api` now (the
client SDK parses responses into the same models). Kept as a re-export for imports."""

from kairos_core.api import (
    BackendList,
    ConfigBody,
    ConfigStatus,
    FieldErrorBody,
    MetricsHistory,
    MetricsSnapshot,
    Problem,
    ReloadStatus,
    RouteList,
    ValidationResult,
)

__all__ = [
    "BackendList",
    "ConfigBody",
    "ConfigStatus",
    "FieldErrorBody",
    "MetricsHistory",
    "MetricsSnapshot",
    "Problem",
    "ReloadStatus",
    "RouteList",
    "ValidationResult",
]
