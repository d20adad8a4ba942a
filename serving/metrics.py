"""Prometheus metrics of the serving API (``GET /metrics``).

- ``shopml_requests_total{endpoint, status}`` and ``shopml_request_seconds{endpoint}``
  (a latency histogram, 1 ms to 2.5 s);
- ``shopml_served_version{model}``, ``shopml_swaps_total{model}``,
  ``shopml_swaps_refused_total{model}``;
- ``shopml_events_total{type, outcome}`` (accepted, or refused with a reason).

With several workers (``shopml serve --workers N``) each process writes its samples to
``PROMETHEUS_MULTIPROC_DIR`` (set by ``shopml serve``, and removed for a single worker, so
a value left in the environment — Feast sets one when imported — cannot mix other
processes' samples in) and ``/metrics`` sums them, so one scrape sees the whole service.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        # the mode prometheus_client took when it was imported (PROMETHEUS_MULTIPROC_DIR set
        # then), not the variable now: Feast sets it on import for its own server
        self.multiprocess = values.ValueClass is not values.MutexValue
        # one registry per app (tests build many apps); in multiprocess mode the samples
        # live in files and a fresh collector reads them per scrape
        self.registry = None if self.multiprocess else CollectorRegistry()
        reg = self.registry
        self.requests = Counter(
            "shopml_requests",
            "Requests by endpoint and status",
            ["endpoint", "status"],
            registry=reg,
        )
        self.latency = Histogram(
            "shopml_request_seconds", "Request latency", ["endpoint"], buckets=BUCKETS, registry=reg
        )
        self.version = Gauge(
            "shopml_served_version", "The served version per model", ["model"], registry=reg,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.swaps = Counter("shopml_swaps", "Versions swapped in", ["model"], registry=reg)
        self.refusals = Counter(
            "shopml_swaps_refused", "Versions refused (verification or loading)", ["model"],
            registry=reg,
        )  # fmt: skip
        self.events = Counter(
            "shopml_events", "Posted events by type and outcome", ["type", "outcome"], registry=reg
        )

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def swapped(self, model: str, version: int) -> None:
        self.swaps.labels(model).inc()
        self.version.labels(model).set(version)

    def refused(self, model: str) -> None:
        self.refusals.labels(model).inc()

    def exposition(self) -> tuple[bytes, str]:
        if self.registry is not None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
