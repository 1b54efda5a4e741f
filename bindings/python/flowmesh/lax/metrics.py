"""The client's Prometheus series, in prometheus_client's default registry
(so ``generate_latest()`` of the application shows them):

- ``<prefix>_publish_total{tier,status}``: publishes by tier, ``success`` or
  ``failure`` (a refusal by the open breaker is ``circuit_open``)
- ``<prefix>_publish_latency_seconds{tier,method}``: latency of successful
  publishes; ``method`` is ``direct_nats`` (the direct path) or ``grpc``
  (the acknowledged path), whichever engine serves it
- ``<prefix>_direct_nats_total``, ``<prefix>_grpc_total``: publishes sent on
  each path
- ``<prefix>_circuit_breaker_state``: 0 closed, 1 open, 2 half-open

Clients with the same prefix share the series (registered once per
process). Without prometheus_client installed, metrics are off.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Tuple

DIRECT = "direct_nats"
ACKED = "grpc"

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_families: Dict[str, Tuple[Any, Any, Any, Any, Any]] = {}
_lock = threading.Lock()


def available() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def _family(prefix: str) -> Tuple[Any, Any, Any, Any, Any]:
    with _lock:
        found = _families.get(prefix)
        if found is not None:
            return found
        from prometheus_client import Counter, Gauge, Histogram

        found = (
            Counter(f"{prefix}_publish", "Publishes by tier and outcome", ["tier", "status"]),
            Histogram(
                f"{prefix}_publish_latency_seconds",
                "Latency of successful publishes by tier and path",
                ["tier", "method"],
                buckets=_LATENCY_BUCKETS,
            ),
            Counter(f"{prefix}_direct_nats", "Publishes sent on the direct (fire-and-forget) path"),
            Counter(f"{prefix}_grpc", "Publishes sent on the acknowledged path"),
            Gauge(f"{prefix}_circuit_breaker_state", "Circuit breaker: 0 closed, 1 open, 2 half-open"),
        )
        _families[prefix] = found
        return found


class Metrics:
    """The series of one prefix with their label children bound up front
    (a labelled lookup per publish costs more than the increment)."""

    def __init__(self, prefix: str) -> None:
        total, latency, direct, acked, breaker = _family(prefix)
        self._total = total
        self._latency = latency
        self._children: Dict[Tuple[str, str], Any] = {}
        self._observers: Dict[Tuple[str, str], Any] = {}
        self.direct = direct
        self.acked = acked
        self.breaker = breaker

    def count(self, tier: str, status: str) -> None:
        child = self._children.get((tier, status))
        if child is None:
            child = self._children[(tier, status)] = self._total.labels(tier=tier, status=status)
        child.inc()

    def observe(self, tier: str, method: str, seconds: float) -> None:
        child = self._observers.get((tier, method))
        if child is None:
            child = self._observers[(tier, method)] = self._latency.labels(tier=tier, method=method)
        child.observe(seconds)

    def path(self, method: str) -> None:
        (self.direct if method == DIRECT else self.acked).inc()

    def breaker_state(self, value: int) -> None:
        self.breaker.set(value)


def metrics_for(enabled: bool, prefix: str) -> Optional[Metrics]:
    if not enabled or not available():
        return None
    return Metrics(prefix)
