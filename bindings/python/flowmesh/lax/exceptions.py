"""The exceptions of the LAX client.

``CircuitBreakerOpen`` is a ``PublishError`` (a publish refused at once);
``ConnectionError`` is also the built-in ``ConnectionError``, raised when
the client cannot reach its engines or is not connected.
"""

from __future__ import annotations

import builtins
from typing import Optional


class LaxError(Exception):
    """Base of every exception of ``flowmesh.lax``."""


class PublishError(LaxError):
    """A publish failed after its retries (``attempts`` of them); ``cause``
    is the last underlying error (also ``__cause__``)."""

    def __init__(
        self,
        message: str,
        *,
        subject: str = "",
        message_id: str = "",
        attempts: int = 0,
        cause: Optional[BaseException] = None,
    ) -> None:
        super().__init__(message)
        self.subject = subject
        self.message_id = message_id
        self.attempts = attempts
        self.cause = cause


class CircuitBreakerOpen(PublishError):
    """Too many consecutive failures: publishes fail at once until the
    breaker's timeout has passed and a trial publish succeeds."""


class ConnectionError(LaxError, builtins.ConnectionError):  # noqa: A001 - the original SDK's name
    """The client could not connect, lost its engine, or is not connected."""


__all__ = ["LaxError", "PublishError", "CircuitBreakerOpen", "ConnectionError"]
