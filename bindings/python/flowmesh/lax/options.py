"""ClientOptions, PublishOptions and Tier, and where each path connects.

Routing: a memory-tier publish without ``require_ack`` takes the direct
path (fire-and-forget, nothing stored); every other publish takes the
acknowledged path. ``nats_urls`` name the direct path's engine and
``broker_addr`` the acknowledged path's; with only one of them given, both
paths use it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..client import endpoint_url

#: The in-process engine used when no address is given at all.
EMBEDDED_URL = "mem://lax"


class Tier(str, enum.Enum):
    """Delivery tier of one publish."""

    #: Fan-out to live subscribers, nothing stored (the direct path).
    MEMORY = "memory"
    #: Stored and acknowledged per the engine's durability.
    PERSISTENT = "persistent"
    #: Stored on a quorum of replicas (a NATS cluster of three or more);
    #: refused on an engine that cannot replicate.
    REPLICATED = "replicated"


@dataclass
class PublishOptions:
    tier: Tier = Tier.MEMORY
    #: Wait for the engine's acknowledgement (forces the acknowledged path).
    require_ack: bool = False
    headers: Dict[str, str] = field(default_factory=dict)
    #: Seconds; None = ``ClientOptions.publish_timeout``.
    timeout: Optional[float] = None


@dataclass
class ClientOptions:
    # NATS: the direct path (nats://host:port; mem:// or file:// also work).
    nats_urls: Optional[List[str]] = field(default_factory=lambda: ["nats://localhost:4222"])
    nats_connect_timeout: float = 5.0
    # The broker: the acknowledged path (host:port = grpc://host:port).
    broker_addr: Optional[str] = "localhost:50051"
    connection_pool_size: int = 4
    # Performance tuning.
    max_concurrent_publishes: int = 1000
    publish_timeout: float = 5.0
    retry_attempts: int = 3
    # Circuit breaker: that many consecutive failed publishes open it; after
    # circuit_breaker_timeout seconds one trial publish may close it.
    circuit_breaker_threshold: int = 10
    circuit_breaker_timeout: float = 30.0
    # Metrics (prometheus_client's default registry).
    enable_metrics: bool = True
    metrics_prefix: str = "lax_client"
    # Logging of the "flowmesh.lax" logger.
    log_level: str = "INFO"

    def validate(self) -> None:
        def positive(name: str, value: float) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"ClientOptions.{name} must be a positive number, got {value!r}")

        positive("nats_connect_timeout", self.nats_connect_timeout)
        positive("publish_timeout", self.publish_timeout)
        positive("circuit_breaker_timeout", self.circuit_breaker_timeout)
        for name in ("connection_pool_size", "max_concurrent_publishes", "circuit_breaker_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ClientOptions.{name} must be an int >= 1, got {value!r}")
        if isinstance(self.retry_attempts, bool) or not isinstance(self.retry_attempts, int) or self.retry_attempts < 0:
            raise ValueError(f"ClientOptions.retry_attempts must be an int >= 0, got {self.retry_attempts!r}")
        if not isinstance(self.metrics_prefix, str) or not self.metrics_prefix.replace("_", "a").isalnum():
            raise ValueError(f"ClientOptions.metrics_prefix must be a Prometheus name, got {self.metrics_prefix!r}")


def nats_url(urls: Sequence[str]) -> str:
    """One engine URL from the NATS server list: ``nats://h1:4222,h2:4222``
    (a ``tls://`` host stays as written); a single mem:// or file:// URL
    passes through."""
    hosts: List[str] = []
    for url in urls:
        if not isinstance(url, str) or not url:
            raise ValueError(f"nats_urls must hold non-empty strings, got {url!r}")
        if url.startswith(("mem://", "file://", "grpc://", "grpcs://", "ws://", "wss://")):
            if len(urls) != 1:
                raise ValueError(f"{url!r} names an engine of its own: give it alone in nats_urls")
            return url
        if url.startswith("nats://"):
            url = url[len("nats://") :]
        elif "://" in url and not url.startswith("tls://"):
            raise ValueError(f"unsupported NATS URL {url!r}: use nats://host:port")
        hosts.extend(h for h in url.split(",") if h)
    return "nats://" + ",".join(hosts)


def broker_url(addr: str) -> str:
    """``host:port`` is a gRPC broker; URLs pass through (as for FlowMesh)."""
    if not isinstance(addr, str) or not addr:
        raise ValueError(f"broker_addr must be a non-empty string, got {addr!r}")
    return endpoint_url(addr)


def routes(opts: ClientOptions) -> Tuple[str, str]:
    """(direct URL, acknowledged URL): with only one address both paths use
    it; with none, the in-process engine ``mem://lax``."""
    direct = nats_url(opts.nats_urls) if opts.nats_urls else None
    acked = broker_url(opts.broker_addr) if opts.broker_addr else None
    if direct is None and acked is None:
        return EMBEDDED_URL, EMBEDDED_URL
    return direct or acked or EMBEDDED_URL, acked or direct or EMBEDDED_URL


def is_embedded(url: str) -> bool:
    return url.startswith(("mem://", "file://"))
