"""Exception hierarchy: one class per fm_status code, all under FlowMeshError."""

from __future__ import annotations

from typing import Dict, NoReturn, Optional, Type

from . import _native as n


class FlowMeshError(Exception):
    """Base of every error the SDK raises.

    ``code`` is the status name (``"FM_ERR_NOT_FOUND"``), ``status`` its
    number, ``details`` the library's detail message (fm_last_error).
    """

    status: int = n.FM_ERR_INTERNAL

    def __init__(
        self,
        message: str,
        code: Optional[str] = None,
        details: Optional[str] = None,
        status: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.code = code if code is not None else _DEFAULT_NAMES.get(type(self).status, "")
        self.details = details if details is not None else message


class FlowMeshInvalidArgumentError(FlowMeshError, ValueError):
    status = n.FM_ERR_INVALID_ARGUMENT


class FlowMeshNotFoundError(FlowMeshError):
    status = n.FM_ERR_NOT_FOUND


class FlowMeshTimeoutError(FlowMeshError, TimeoutError):
    status = n.FM_ERR_TIMEOUT


class FlowMeshDisconnectedError(FlowMeshError, ConnectionError):
    status = n.FM_ERR_DISCONNECTED


class FlowMeshUnauthorizedError(FlowMeshError, PermissionError):
    status = n.FM_ERR_UNAUTHORIZED


class FlowMeshClosedError(FlowMeshError):
    status = n.FM_ERR_CLOSED


class FlowMeshAlreadyExistsError(FlowMeshError):
    status = n.FM_ERR_ALREADY_EXISTS


class FlowMeshConflictError(FlowMeshError):
    status = n.FM_ERR_CONFLICT


class FlowMeshTooLargeError(FlowMeshError):
    status = n.FM_ERR_TOO_LARGE


class FlowMeshUnavailableError(FlowMeshError):
    status = n.FM_ERR_UNAVAILABLE


class FlowMeshInternalError(FlowMeshError):
    status = n.FM_ERR_INTERNAL


# Names used when an error is raised by Python itself (no native call made).
_DEFAULT_NAMES: Dict[int, str] = {
    n.FM_ERR_INVALID_ARGUMENT: "FM_ERR_INVALID_ARGUMENT",
    n.FM_ERR_NOT_FOUND: "FM_ERR_NOT_FOUND",
    n.FM_ERR_TIMEOUT: "FM_ERR_TIMEOUT",
    n.FM_ERR_DISCONNECTED: "FM_ERR_DISCONNECTED",
    n.FM_ERR_UNAUTHORIZED: "FM_ERR_UNAUTHORIZED",
    n.FM_ERR_CLOSED: "FM_ERR_CLOSED",
    n.FM_ERR_ALREADY_EXISTS: "FM_ERR_ALREADY_EXISTS",
    n.FM_ERR_CONFLICT: "FM_ERR_CONFLICT",
    n.FM_ERR_TOO_LARGE: "FM_ERR_TOO_LARGE",
    n.FM_ERR_UNAVAILABLE: "FM_ERR_UNAVAILABLE",
    n.FM_ERR_INTERNAL: "FM_ERR_INTERNAL",
}

_BY_STATUS: Dict[int, Type[FlowMeshError]] = {
    cls.status: cls
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
    cls = _BY_STATUS.get(status, FlowMeshError)
    name = n.status_name(status)
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
