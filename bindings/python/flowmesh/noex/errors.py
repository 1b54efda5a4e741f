"""The noex client API's errors: NoexClientError with a machine-readable
``code`` (the store's code: VALIDATION_ERROR, NOT_FOUND, CONFLICT, ...),
RequestTimeoutError and DisconnectedError."""

from __future__ import annotations

import json
from typing import Any, Optional

from .._errors import (
    FlowMeshClosedError,
    FlowMeshDisconnectedError,
    FlowMeshError,
    FlowMeshTimeoutError,
)


class NoexClientError(Exception):
    """A failed request. ``code`` is machine-readable; ``details`` holds the
    failed fields of a VALIDATION_ERROR (``[{"field", "message"}]``)."""

    def __init__(self, code: str, message: str, details: Optional[Any] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class RequestTimeoutError(NoexClientError):
    """No answer within ``request_timeout_ms``."""

    def __init__(self, message: str = "request timed out") -> None:
        super().__init__("TIMEOUT", message)


class DisconnectedError(NoexClientError):
    """Sent while not connected, or the connection was lost while waiting."""

    def __init__(self, message: str = "not connected") -> None:
        super().__init__("DISCONNECTED", message)


def from_native(err: FlowMeshError) -> NoexClientError:
    """The noex error for a failed native store call: its detail is the
    store's error as JSON (``{"code", "message", "details"?}``)."""
    try:
        body = json.loads(err.details)
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        code, message, details = body["code"], str(body.get("message", "")), body.get("details")
    else:
        code, message, details = err.code.removeprefix("FM_ERR_"), err.details, None
    if code == "TIMEOUT" or isinstance(err, FlowMeshTimeoutError):
        return RequestTimeoutError(message)
    if code in ("DISCONNECTED", "CLOSED") or isinstance(err, (FlowMeshDisconnectedError, FlowMeshClosedError)):
        return DisconnectedError(message)
    return NoexClientError(code, message, details)
