"""Plain data classes returned and accepted by the SDK.

Field names follow the original FlowMesh Python SDK where the core has the
data; fields it cannot provide are left out rather than faked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import IntEnum
from typing import Dict, Optional


class ConnState(IntEnum):
    """The state of a client's link to its engine (``fm_conn_state``).

    Embedded engines (mem://, file://) are CONNECTED until closed.
    """

    #: Opening the first connection.
    CONNECTING = 1
    #: The engine answers.
    CONNECTED = 2
    #: The link was lost; reconnecting with backoff.
    RECONNECTING = 3
    #: Gave up after ``max_reconnect_attempts``: every call fails with
    #: FlowMeshDisconnectedError; close the client and connect again.
    DISCONNECTED = 4
    #: ``close()`` was called: the last state a listener sees.
    CLOSED = 5


@dataclass
class Event:
    """A message to write to a stream (``key`` picks the partition)."""

    payload: bytes
    headers: Dict[str, str] = field(default_factory=dict)
    key: Optional[bytes] = None


@dataclass
class Message:
    """A message read from a stream."""

    id: str  # "<partition>-<offset>", unique within the stream
    resource_path: str  # "tenant/namespace/stream"
    partition: int
    offset: int
    payload: bytes
    headers: Dict[str, str]
    timestamp_ms: int
    key: Optional[bytes] = None
    #: The subject it was published to: a dotted subject (``orders.created``,
    #: from the ``fm-subject`` header) or else the stream's name.
    subject: str = ""

    @property
    def live(self) -> bool:
        """A memory-tier message: delivered to live subscribers only, never
        stored (``offset`` is -1, it cannot be read or committed)."""
        return self.offset < 0

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000.0, tz=timezone.utc)


@dataclass
class Job:
    """A reserved (or dead-lettered) queue job.

    ``id`` is the job id as a string (as the original SDK returned it) and
    ``seq`` the same id as an int; ack/nack accept either.
    """

    id: str
    seq: int
    resource_path: str
    payload: bytes
    headers: Dict[str, str]
    attempts: int
    priority: int = 0


@dataclass
class QueueStats:
    pending_jobs: int
    in_flight_jobs: int
    delayed_jobs: int
    dlq_jobs: int

    @property
    def total_jobs(self) -> int:
        """Every job the queue holds, dead-lettered ones included."""
        return self.pending_jobs + self.in_flight_jobs + self.delayed_jobs + self.dlq_jobs


@dataclass
class RetryPolicy:
    max_attempts: int = 3
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    backoff_multiplier: float = 2.0

    @property
    def backoff_strategy(self) -> str:
        return "fixed" if self.backoff_multiplier == 1.0 else "exponential"


@dataclass
class ConsumerGroupState:
    stream: str
    group: str
    partition: int
    committed_offset: int  # -1 when the group committed nothing yet
    latest_offset: int  # offset the next message will get
    lag: int  # messages after the committed one


@dataclass
class KVEvent:
    """One change seen by ``kv.watch``: op is "put", "delete" or "expire"."""

    op: str
    key: str
    value: bytes
    revision: int
