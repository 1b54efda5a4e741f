"""The exception classes under the module path the original SDK used
(``from flowmesh.exceptions import FlowMeshNotFoundError``)."""

from ._errors import (
    FlowMeshAlreadyExistsError,
    FlowMeshClosedError,
    FlowMeshConflictError,
    FlowMeshDisconnectedError,
    FlowMeshError,
    FlowMeshInternalError,
    FlowMeshInvalidArgumentError,
    FlowMeshNotFoundError,
    FlowMeshTimeoutError,
    FlowMeshTooLargeError,
    FlowMeshUnauthorizedError,
    FlowMeshUnavailableError,
)

__all__ = [
    "FlowMeshError",
    "FlowMeshInvalidArgumentError",
    "FlowMeshNotFoundError",
    "FlowMeshTimeoutError",
    "FlowMeshDisconnectedError",
    "FlowMeshUnauthorizedError",
    "FlowMeshClosedError",
    "FlowMeshAlreadyExistsError",
    "FlowMeshConflictError",
    "FlowMeshTooLargeError",
    "FlowMeshUnavailableError",
    "FlowMeshInternalError",
]
