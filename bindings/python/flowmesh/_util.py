"""Argument conversion shared by the stream, queue and KV clients."""

from __future__ import annotations

from datetime import timedelta
from typing import Optional, Union

from ._errors import FlowMeshInvalidArgumentError

Duration = Union[timedelta, float, int]


def _segment(label: str, part: str) -> str:
    if not isinstance(part, str) or not part or "/" in part or "\0" in part:
        raise FlowMeshInvalidArgumentError(f"{label} must be a non-empty string without '/' or NUL, got {part!r}")
    return part


def resource(tenant: str, namespace: str, name: str) -> bytes:
    """The native resource name "tenant/namespace/name" (the core checks the
    characters; here only that each part is one non-empty segment)."""
    parts = (tenant, namespace, name)
    return "/".join(_segment(label, part) for label, part in zip(("tenant", "namespace", "name"), parts)).encode()


def scope(tenant: str, namespace: str, prefix: str) -> bytes:
    """The qualified listing prefix "tenant/namespace/prefix" ("" = all)."""
    if not isinstance(prefix, str) or "/" in prefix or "\0" in prefix:
        raise FlowMeshInvalidArgumentError(f"prefix must be a string without '/' or NUL, got {prefix!r}")
    return f"{_segment('tenant', tenant)}/{_segment('namespace', namespace)}/{prefix}".encode()


def text(value: str, label: str) -> bytes:
    if not isinstance(value, str):
        raise FlowMeshInvalidArgumentError(f"{label} must be a str, got {type(value).__name__}")
    if "\0" in value:  # C strings end at NUL: refuse rather than truncate
        raise FlowMeshInvalidArgumentError(f"{label} must not contain NUL characters")
    return value.encode()


def millis(value: Optional[Duration], default_ms: int = 0, label: str = "duration") -> int:
    """A timedelta (or seconds as a number) in whole milliseconds."""
    if value is None:
        return default_ms
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise FlowMeshInvalidArgumentError(f"{label} must not be negative")
    return int(round(seconds * 1000))


def non_negative(value: int, label: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FlowMeshInvalidArgumentError(f"{label} must be a non-negative int, got {value!r}")
    return value


def payload_bytes(value: Union[bytes, bytearray, memoryview, str], label: str = "payload") -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise FlowMeshInvalidArgumentError(f"{label} must be bytes, got {type(value).__name__}")
