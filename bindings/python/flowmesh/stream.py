"""Streams: append-only partitioned logs (``client.stream``)."""

from __future__ import annotations

import ctypes
import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

from . import _lifecycle, _publish
from . import _native as n
from ._bridge import PullState, Subscription, copy_bytes
from ._core import Call, Core, Options
from ._errors import FlowMeshInvalidArgumentError, FlowMeshNotFoundError, check
from ._native import lib
from ._util import Duration, millis, non_negative, payload_bytes, resource, text
from .types import ConsumerGroupState, Event, Message

if TYPE_CHECKING:
    from .client import FlowMesh

log = logging.getLogger("flowmesh")

START_LATEST = -2
START_COMMITTED = -1


def _retention(max_age: Optional[Duration], max_bytes: Optional[int], max_messages: Optional[int]) -> Dict[str, str]:
    """The retention options create and update share, as native option strings."""
    opts: Dict[str, str] = {}
    if max_age is not None:
        opts["max_age_ms"] = str(millis(max_age, label="max_age"))
    if max_bytes is not None:
        opts["max_bytes"] = str(non_negative(max_bytes, "max_bytes"))
    if max_messages is not None:
        opts["max_messages"] = str(non_negative(max_messages, "max_messages"))
    return opts


def _message(m: Any) -> Message:
    """Copy a borrowed fm_message (valid only during the call/callback)."""
    stream = m.stream.decode("utf-8", "replace") if m.stream else ""
    headers = n.headers_dict(m.headers, m.headers_len)
    offset = -1 if m.offset == n.FM_OFFSET_NONE else int(m.offset)
    return Message(
        id=f"{m.partition}-{offset}",
        resource_path=stream,
        partition=int(m.partition),
        offset=offset,
        payload=copy_bytes(m.payload, m.payload_len),
        headers=headers,
        timestamp_ms=int(m.timestamp_ms),
        key=copy_bytes(m.key, m.key_len) if m.key else None,
        subject=headers.get(n.FM_SUBJECT_HEADER) or stream.rsplit("/", 1)[-1],
    )


class StreamClient:
    def __init__(self, client: "FlowMesh") -> None:
        self._client = client

    async def create(
        self,
        tenant: str,
        namespace: str,
        stream: str,
        partitions: int = 1,
        *,
        max_age: Optional[Duration] = None,
        max_bytes: Optional[int] = None,
        max_messages: Optional[int] = None,
        tier: Optional[str] = None,
    ) -> None:
        """Create a stream (streams are also created on first write).

        ``tier="memory"`` keeps the stream in memory only (no disk, bounded,
        oldest dropped); the default is ``"durable"``.

        OK if it exists with the same partition count;
        FlowMeshAlreadyExistsError if it exists with another.
        """
        name = resource(tenant, namespace, stream)
        opts: Dict[str, str] = {"partitions": str(non_negative(partitions, "partitions"))}
        opts.update(_retention(max_age, max_bytes, max_messages))
        if tier is not None:
            opts["tier"] = str(tier)

        def work(h: int, _: Call) -> None:
            with Options(opts) as o:
                check(lib().fm_stream_create(h, name, o), "stream.create")

        await self._client._core().run(work)

    async def list(self, tenant: str, namespace: str, prefix: str = "") -> List[str]:
        """Names of the namespace's streams starting with ``prefix``, sorted
        (as passed to the other methods, without "tenant/namespace/")."""
        work = _lifecycle.list_names("fm_streams_list", "stream.list", tenant, namespace, prefix)
        result: List[str] = await self._client._core().run(work)
        return result

    async def delete(self, tenant: str, namespace: str, stream: str) -> None:
        """Delete a stream with its messages and consumer-group offsets
        (FlowMeshNotFoundError if there is none). Subscriptions on it end
        with FlowMeshNotFoundError; a later write creates it again, empty."""
        await self._client._core().run(_lifecycle.delete("fm_stream_delete", "stream.delete", tenant, namespace, stream))

    async def purge(self, tenant: str, namespace: str, stream: str) -> int:
        """Remove every message and keep the stream; returns how many went.
        Offsets continue from where they were."""
        work = _lifecycle.purge("fm_stream_purge", "stream.purge", tenant, namespace, stream)
        removed: int = await self._client._core().run(work)
        return removed

    async def update(
        self,
        tenant: str,
        namespace: str,
        stream: str,
        *,
        partitions: Optional[int] = None,
        max_age: Optional[Duration] = None,
        max_bytes: Optional[int] = None,
        max_messages: Optional[int] = None,
    ) -> None:
        """Change retention (0 = unlimited) or grow the partition count of an
        existing stream; what is not given keeps its value.
        FlowMeshInvalidArgumentError for nothing to change or fewer partitions,
        FlowMeshNotFoundError if the stream does not exist."""
        name = resource(tenant, namespace, stream)
        opts: Dict[str, str] = {}
        if partitions is not None:
            opts["partitions"] = str(non_negative(partitions, "partitions"))
        opts.update(_retention(max_age, max_bytes, max_messages))
        if not opts:
            raise FlowMeshInvalidArgumentError("stream.update needs at least one setting to change")

        def work(h: int, _: Call) -> None:
            with Options(opts) as o:
                check(lib().fm_stream_update(h, name, o), "stream.update")

        await self._client._core().run(work)

    async def partitions(self, tenant: str, namespace: str, stream: str) -> int:
        name = resource(tenant, namespace, stream)

        def work(h: int, _: Call) -> int:
            out = ctypes.c_uint32()
            check(lib().fm_stream_partitions(h, name, ctypes.byref(out)), "stream.partitions")
            return int(out.value)

        return await self._client._core().run(work)

    async def write(self, tenant: str, namespace: str, stream: str, events: Sequence[Event]) -> List[int]:
        """Append events in one batch; returns the offset of each."""
        name = resource(tenant, namespace, stream)
        out_msgs = [n.OutMsg(payload_bytes(e.payload), e.key, e.headers) for e in events]
        if not out_msgs:
            return []
        count = len(out_msgs)

        def work(h: int, _: Call) -> List[int]:
            msgs = (n.fm_msg * count)()
            for i, om in enumerate(out_msgs):
                om.fill(msgs[i])
            positions = (n.fm_position * count)()
            check(lib().fm_publish_batch(h, name, msgs, count, positions), "stream.write")
            return [int(p.offset) for p in positions]

        return await self._client._core().run(work)

    async def publish(
        self,
        tenant: str,
        namespace: str,
        subject: str,
        payload: Union[bytes, str],
        *,
        key: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None,
        tier: str = "persistent",
        require_ack: bool = False,
        timeout: Optional[Duration] = None,
        msg_id: Optional[str] = None,
    ) -> Optional[int]:
        """Publish one message with a delivery tier; returns its offset, or
        None when nothing is stored.

        ``tier``: ``"memory"`` (fan-out to live subscribers, nothing stored,
        returns once sent), ``"persistent"`` (stored per the engine's
        durability) or ``"replicated"`` (stored on a quorum; on an engine that
        cannot replicate, FlowMeshUnavailableError). ``require_ack`` waits for
        the engine's acknowledgement even on the memory tier. ``subject`` may
        have dots (``orders.created``): the first token names the stream.
        ``timeout``: the publish deadline (FlowMeshTimeoutError beyond).
        ``msg_id``: the message's id: a stored publish with an id the stream
        has seen is stored once and answers with the first copy's offset (so
        a retry after a lost answer is harmless).
        """
        name = resource(tenant, namespace, subject)
        tier_value = _publish.tier_name(tier)
        ack = bool(require_ack)
        timeout_ms = millis(timeout, label="timeout")
        msg = n.OutMsg(payload_bytes(payload), key, headers)
        mid = text(msg_id, "msg_id") if msg_id is not None else None
        core = self._client._core()
        if _publish.is_direct(tier_value, ack) and _publish.inline(self._client.url):
            # Fire-and-forget on an engine that does not wait for the network:
            # cheaper on the loop thread than a hop to the pool.
            handle = core.enter()
            try:
                return _publish.publish_sync(handle, name, msg, tier_value, ack, timeout_ms, mid, "stream.publish")
            finally:
                core.leave()

        pub = _publish.async_publisher(core)
        if pub is not None:  # completes through a callback: no thread per publish
            return await pub.publish(name, msg, tier_value, ack, timeout_ms, mid, "stream.publish")

        def work(h: int, _: Call) -> Optional[int]:
            return _publish.publish_sync(h, name, msg, tier_value, ack, timeout_ms, mid, "stream.publish")

        return await core.run(work)

    async def read(
        self,
        tenant: str,
        namespace: str,
        stream: str,
        partition: int = 0,
        offset: int = 0,
        max_messages: int = 10,
    ) -> List[Message]:
        name = resource(tenant, namespace, stream)
        non_negative(partition, "partition")
        non_negative(offset, "offset")
        non_negative(max_messages, "max_messages")

        def work(h: int, _: Call) -> List[Message]:
            out = ctypes.c_void_p()
            check(
                lib().fm_read(h, name, partition, offset, max_messages, ctypes.byref(out)),
                "stream.read",
            )
            try:
                count = lib().fm_messages_len(out)
                return [_message(lib().fm_messages_get(out, i).contents) for i in range(count)]
            finally:
                lib().fm_messages_free(out)

        return await self._client._core().run(work)

    def subscribe(
        self,
        tenant: str,
        namespace: str,
        stream: str,
        consumer_group: Optional[str] = None,
        partition: Optional[int] = 0,
        start_offset: int = START_COMMITTED,
        *,
        auto_commit: bool = False,
        buffer_size: int = 1024,
    ) -> Subscription[Message]:
        """An async iterator of messages.

        start_offset: -2 latest (only new messages), -1 committed (after the
        group's last committed offset; from the beginning when nothing is
        committed or there is no group), >= 0 that offset. ``partition=None``
        delivers every partition. Offsets are committed by the caller
        (``commit_offset``) unless ``auto_commit`` is true; auto-commit marks a
        message done once the iterator returned it (committed in batches when
        the next batch is fetched, the rest when the subscription ends).
        Messages are fetched in batches of up to ``min(buffer_size, 256)``;
        the library holds at most 1024 more, then pauses the feed until the
        consumer catches up. A feed that ended with an error (e.g. broker
        unreachable past ``max_reconnect_attempts``) raises it.
        """
        name = resource(tenant, namespace, stream)
        opts: Dict[str, str] = {}
        if consumer_group:
            opts["group"] = consumer_group
            opts["auto_commit"] = "true" if auto_commit else "false"
        elif auto_commit:
            raise FlowMeshInvalidArgumentError("auto_commit needs a consumer_group")
        if partition is not None:
            opts["partition"] = str(non_negative(partition, "partition"))
        if start_offset == START_LATEST:
            opts["start"] = "latest"
        elif start_offset == START_COMMITTED:
            opts["start"] = "committed" if consumer_group else "earliest"
        elif isinstance(start_offset, int) and start_offset >= 0:
            opts["start"] = str(start_offset)
        else:
            raise FlowMeshInvalidArgumentError(
                f"start_offset must be -2 (latest), -1 (committed) or >= 0, got {start_offset!r}"
            )

        def do_subscribe(h: int, _: Call, state: PullState[Message]) -> int:
            out = ctypes.c_void_p()
            with Options(opts) as o:
                check(lib().fm_subscribe_pull(h, name, o, ctypes.byref(out)), "stream.subscribe")
            assert out.value is not None
            return int(out.value)

        commit = (name, consumer_group.encode()) if consumer_group and auto_commit else None

        def make_state(core: Core, _loop: Any, size: int) -> PullState[Message]:
            return PullState(core, size, _message, "stream.subscribe", commit)

        return Subscription(self._client._core, do_subscribe, buffer_size, make_state)

    async def commit_offset(
        self,
        tenant: str,
        namespace: str,
        stream: str,
        consumer_group: str,
        partition: int,
        offset: int,
    ) -> None:
        """Record ``offset`` as the last message the group processed."""
        name = resource(tenant, namespace, stream)
        group = text(consumer_group, "consumer_group")
        non_negative(partition, "partition")
        non_negative(offset, "offset")

        def work(h: int, _: Call) -> None:
            check(lib().fm_commit_offset(h, name, group, partition, offset), "stream.commit_offset")

        await self._client._core().run(work)

    async def get_offset(
        self,
        tenant: str,
        namespace: str,
        stream: str,
        consumer_group: str,
        partition: int = 0,
    ) -> int:
        """The group's committed offset; FlowMeshNotFoundError if none."""
        name = resource(tenant, namespace, stream)
        group = text(consumer_group, "consumer_group")
        non_negative(partition, "partition")

        def work(h: int, _: Call) -> int:
            out = ctypes.c_uint64()
            check(
                lib().fm_get_offset(h, name, group, partition, ctypes.byref(out)),
                "stream.get_offset",
            )
            return int(out.value)

        return await self._client._core().run(work)

    async def get_latest_offset(self, tenant: str, namespace: str, stream: str, partition: int = 0) -> int:
        """The offset the next message of the partition will get (0 if empty)."""
        name = resource(tenant, namespace, stream)
        non_negative(partition, "partition")

        def work(h: int, _: Call) -> int:
            out = ctypes.c_uint64()
            check(
                lib().fm_get_latest_offset(h, name, partition, ctypes.byref(out)),
                "stream.get_latest_offset",
            )
            return int(out.value)

        return await self._client._core().run(work)

    async def get_consumer_group_state(
        self,
        tenant: str,
        namespace: str,
        stream: str,
        consumer_group: str,
        partition: int = 0,
    ) -> ConsumerGroupState:
        name = resource(tenant, namespace, stream)
        group = text(consumer_group, "consumer_group")
        non_negative(partition, "partition")

        def work(h: int, _: Call) -> ConsumerGroupState:
            latest = ctypes.c_uint64()
            check(
                lib().fm_get_latest_offset(h, name, partition, ctypes.byref(latest)),
                "stream.get_consumer_group_state",
            )
            committed = ctypes.c_uint64()
            try:
                check(
                    lib().fm_get_offset(h, name, group, partition, ctypes.byref(committed)),
                    "stream.get_consumer_group_state",
                )
                last = int(committed.value)
            except FlowMeshNotFoundError:
                last = -1  # nothing committed yet
            return ConsumerGroupState(
                stream=name.decode(),
                group=consumer_group,
                partition=partition,
                committed_offset=last,
                latest_offset=int(latest.value),
                lag=max(0, int(latest.value) - (last + 1)),
            )

        return await self._client._core().run(work)
