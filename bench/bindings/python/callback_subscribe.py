"""The callback delivery path for stream subscriptions (fm_subscribe with a
ctypes callback feeding an asyncio channel), kept beside the benchmark that
compares it with the binding's pull mode (fm_subscription_next), which is
what ``client.stream.subscribe`` uses.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any, Dict, Optional

from flowmesh import _native as n
from flowmesh._bridge import Channel, Subscription, SubState
from flowmesh._core import Call, Core, Options
from flowmesh._errors import check
from flowmesh._native import lib
from flowmesh._util import resource
from flowmesh.client import FlowMesh
from flowmesh.stream import _message
from flowmesh.types import Message

log = logging.getLogger("flowmesh.bench")


def subscribe_callback(
    client: FlowMesh, tenant: str, namespace: str, stream: str, start: str = "earliest", buffer_size: int = 1024
) -> Subscription[Message]:
    """Like ``client.stream.subscribe(tenant, namespace, stream, None, 0, 0)``
    over callback delivery."""
    name = resource(tenant, namespace, stream)
    opts: Dict[str, str] = {"partition": "0", "start": start}

    def do_subscribe(h: int, _: Call, state: SubState[Message]) -> int:
        def on_message(_user: Optional[int], msg: Any) -> None:
            # Runs on a library thread; an exception must not reach C.
            # Referencing `state` keeps it (and this thunk) alive while running.
            state.pin.pin()
            try:
                message = _message(msg.contents)
            except Exception:  # pragma: no cover - defensive
                log.exception("flowmesh: could not convert a message")
                return
            state.channel.put(message)

        state.callback = n.MESSAGE_CB(on_message)
        out = ctypes.c_void_p()
        with Options(opts) as o:
            check(lib().fm_subscribe(h, name, o, state.callback, None, ctypes.byref(out)), "stream.subscribe")
        assert out.value is not None
        return int(out.value)

    def make_state(core: Core, loop: Any, size: int) -> SubState[Message]:
        return SubState(core, Channel(loop, size), "stream.subscribe")

    return Subscription(client._core, do_subscribe, buffer_size, make_state)
