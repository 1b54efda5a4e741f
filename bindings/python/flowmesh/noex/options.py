"""ClientOptions, AuthOptions, ReconnectOptions and WelcomeInfo of the noex
client API, and their translation into the core's connect options."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Union


@dataclass(frozen=True)
class CredentialOptions:
    username: str
    password: str


@dataclass(frozen=True)
class AuthOptions:
    #: A token sent with every request: an access-file token or an identity
    #: session token (docs/SECURITY.md).
    token: Optional[str] = None
    #: Username/password of a broker with --identity: the core logs in after
    #: connect and after every reconnect.
    credentials: Optional[CredentialOptions] = None


@dataclass(frozen=True)
class ReconnectOptions:
    max_retries: float = float("inf")
    initial_delay_ms: int = 1_000
    max_delay_ms: int = 30_000
    backoff_multiplier: float = 2.0
    jitter_ms: int = 500


@dataclass(frozen=True)
class ClientOptions:
    auth: Optional[AuthOptions] = None
    reconnect: Union[bool, ReconnectOptions] = True
    request_timeout_ms: int = 10_000
    connect_timeout_ms: int = 5_000
    heartbeat: bool = True


@dataclass(frozen=True)
class WelcomeInfo:
    """What connect() learned: the library version, the client's clock at
    connect (ms since the epoch) and whether a token is in use."""

    version: str
    server_time: int
    requires_auth: bool


def native_options(opts: ClientOptions, remote: bool) -> Dict[str, str]:
    """Connect options for the core. Reconnect and heartbeat settings apply
    to a broker (grpc://) only: embedded engines never lose their link."""
    out: Dict[str, str] = {
        "request_timeout_ms": str(int(opts.request_timeout_ms)),
        "connect_timeout_ms": str(int(opts.connect_timeout_ms)),
    }
    if not remote:
        return out
    if not opts.heartbeat:
        out["heartbeat_ms"] = "0"
    rc = opts.reconnect
    if rc is False:
        out["max_reconnect_attempts"] = "1"  # the core always tries once more, then gives up
    elif isinstance(rc, ReconnectOptions):
        retries = rc.max_retries
        out["max_reconnect_attempts"] = "0" if math.isinf(retries) else str(max(1, int(retries)))
        out["reconnect_initial_ms"] = str(int(rc.initial_delay_ms))
        out["reconnect_max_ms"] = str(int(rc.max_delay_ms))
        out["reconnect_multiplier"] = str(float(rc.backoff_multiplier))
        out["reconnect_jitter_ms"] = str(int(rc.jitter_ms))
    return out
