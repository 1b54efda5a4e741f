"""Exception hierarchy: one class per fm_status code, all under FlowMeshError."""

from __future__ import annotations

from typing import Dict, NoReturn, Optional, Type

from . import _native as n


class FlowMeshError(Exception):
    """Base of every error the SDK raises.

    ``code`` is the status name (``"FM_ERR_NOT_FOUND"``), ``status`` its
    number (as the library defines it), ``details`` the library's detail
    message (fm_last_error).
    """

    #: The status name this class stands for.
    status_name: str = "FM_ERR_INTERNAL"

    def __init__(
        self,
        message: str,
        code: Optional[str] = None,
        details: Optional[str] = None,
        status: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else type(self).status_name
        self._status = status
        self.details = details if details is not None else message

    @property
    def status(self) -> int:
        """The numeric fm_status (looked up in the library when raised by Python)."""
        if self._status is None:
            self._status = n.status_code(self.code)
        return self._status


class FlowMeshInvalidArgumentError(FlowMeshError, ValueError):
    status_name = "FM_ERR_INVALID_ARGUMENT"


class FlowMeshNotFoundError(FlowMeshError):
    status_name = "FM_ERR_NOT_FOUND"


class FlowMeshTimeoutError(FlowMeshError, TimeoutError):
    status_name = "FM_ERR_TIMEOUT"


class FlowMeshDisconnectedError(FlowMeshError, ConnectionError):
    status_name = "FM_ERR_DISCONNECTED"


class FlowMeshUnauthorizedError(FlowMeshError, PermissionError):
    status_name = "FM_ERR_UNAUTHORIZED"


class FlowMeshClosedError(FlowMeshError):
    status_name = "FM_ERR_CLOSED"


class FlowMeshAlreadyExistsError(FlowMeshError):
    status_name = "FM_ERR_ALREADY_EXISTS"


class FlowMeshConflictError(FlowMeshError):
    status_name = "FM_ERR_CONFLICT"


class FlowMeshTooLargeError(FlowMeshError):
    status_name = "FM_ERR_TOO_LARGE"


class FlowMeshUnavailableError(FlowMeshError):
    status_name = "FM_ERR_UNAVAILABLE"


class FlowMeshInternalError(FlowMeshError):
    status_name = "FM_ERR_INTERNAL"


_BY_NAME: Dict[str, Type[FlowMeshError]] = {
    cls.status_name: cls
    for cls in (
        FlowMeshInvalidArgumentError,
        FlowMeshNotFoundError,
        FlowMeshTimeoutError,
        FlowMeshDisconnectedError,
        FlowMeshUnauthorizedError,
        FlowMeshClosedError,
        FlowMeshAlreadyExistsError,
        FlowMeshConflictError,
        FlowMeshTooLargeError,
        FlowMeshUnavailableError,
        FlowMeshInternalError,
    )
}


def error_for(status: int, detail: str, operation: str = "") -> FlowMeshError:
    name = n.status_name(status)
    cls = _BY_NAME.get(name, FlowMeshError)
    prefix = f"{operation} failed: " if operation else ""
    message = f"{prefix}{detail or name}"
    return cls(message, code=name, details=detail, status=status)


def check(status: int, operation: str = "") -> None:
    """Raise for a non-OK status.

    Must run on the thread that made the failing call, right after it:
    fm_last_error is per thread and overwritten by the next fm_ call.
    """
    if status != n.FM_OK:
        raise_status(status, operation)


def raise_status(status: int, operation: str = "") -> NoReturn:
    detail = n.last_error()
    raise error_for(status, detail, operation)
