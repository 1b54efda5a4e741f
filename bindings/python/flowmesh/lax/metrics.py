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

Clients with the same prefix share the series (one collector per prefix,
registered once per process). The counts are plain Python numbers updated
on the event loop and read by the collector at scrape time: a
prometheus_client Counter or Histogram takes a lock per update, which would
cost more than a memory-tier publish. Without prometheus_client installed,
metrics are off.
"""

from __future__ import annotations

import bisect
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

DIRECT = "direct_nats"
ACKED = "grpc"

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_collectors: Dict[str, "Metrics"] = {}
_lock = threading.Lock()


def available() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0


class Metrics:
    """The series of one prefix; a prometheus_client collector."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.totals: Dict[Tuple[str, str], int] = {}
        self.latency: Dict[Tuple[str, str], _Histogram] = {}
        self.paths = {DIRECT: 0, ACKED: 0}
        self.breaker = 0

    # ---- updates (event loop thread) ---------------------------------------------
    def count(self, tier: str, status: str) -> None:
        key = (tier, status)
        self.totals[key] = self.totals.get(key, 0) + 1

    def success(self, tier: str, method: str, seconds: float) -> None:
        """A publish that went through: counted, timed, and its path counted."""
        key = (tier, "success")
        self.totals[key] = self.totals.get(key, 0) + 1
        h = self.latency.get((tier, method))
        if h is None:
            h = self.latency[(tier, method)] = _Histogram()
        h.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        h.sum += seconds
        self.paths[method] += 1

    def breaker_state(self, value: int) -> None:
        self.breaker = value

    # ---- scrape (any thread) ----------------------------------------------------------
    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        p = self.prefix
        total = CounterMetricFamily(f"{p}_publish", "Publishes by tier and outcome", labels=["tier", "status"])
        for (tier, status), n in sorted(dict(self.totals).items()):
            total.add_metric([tier, status], n)
        yield total
        latency = HistogramMetricFamily(
            f"{p}_publish_latency_seconds", "Latency of successful publishes by tier and path", labels=["tier", "method"]
        )
        for (tier, method), h in sorted(dict(self.latency).items()):
            counts = list(h.counts)
            buckets: List[Tuple[str, float]] = []
            running = 0
            for bound, n in zip([*map(str, BUCKETS), "+Inf"], counts):
                running += n
                buckets.append((bound, running))
            latency.add_metric([tier, method], buckets, h.sum)
        yield latency
        direct = CounterMetricFamily(f"{p}_direct_nats", "Publishes sent on the direct (fire-and-forget) path")
        direct.add_metric([], self.paths[DIRECT])
        yield direct
        acked = CounterMetricFamily(f"{p}_grpc", "Publishes sent on the acknowledged path")
        acked.add_metric([], self.paths[ACKED])
        yield acked
        state = GaugeMetricFamily(f"{p}_circuit_breaker_state", "Circuit breaker: 0 closed, 1 open, 2 half-open")
        state.add_metric([], self.breaker)
        yield state

    def describe(self) -> Iterator[Any]:
        # The names, for the registry's duplicate check, without reading values.
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        p = self.prefix
        yield CounterMetricFamily(f"{p}_publish", "", labels=["tier", "status"])
        yield HistogramMetricFamily(f"{p}_publish_latency_seconds", "", labels=["tier", "method"])
        yield CounterMetricFamily(f"{p}_direct_nats", "")
        yield CounterMetricFamily(f"{p}_grpc", "")
        yield GaugeMetricFamily(f"{p}_circuit_breaker_state", "")


def metrics_for(enabled: bool, prefix: str) -> Optional[Metrics]:
    """The prefix's shared series, registered on first use; None when
    metrics are off or prometheus_client is missing."""
    if not enabled or not available():
        return None
    with _lock:
        found = _collectors.get(prefix)
        if found is None:
            from prometheus_client import REGISTRY

            found = Metrics(prefix)
            REGISTRY.register(found)
            _collectors[prefix] = found
        return found
