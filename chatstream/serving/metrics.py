"""Prometheus metrics of one ChatStream, in its own registry (no process-wide globals), for ``GET /metrics``.

Names follow Prometheus conventions with a ``chatstream_`` prefix, modelled on vLLM's
(``chatstream_time_to_first_token_seconds``, ``chatstream_num_requests_waiting``, ...). Every series has a
``source`` label: ``live`` (a real model), ``replay`` (a MockTransformer cassette) or ``mock`` (the
generator mock), so a replayed run is never mistaken for a live one. Request outcomes and rejection
reasons are enums: a metric cannot be fed a string nobody declared.

    metrics = Metrics(source="live", running=lambda: admission.running, waiting=lambda: admission.waiting)
    timer = metrics.request("openai")       # at admission
    timer.token(); timer.token()            # as tokens are sent
    timer.finish(Outcome.SUCCESS, prompt_tokens=12)
"""

from __future__ import annotations

import enum
import sys
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = CONTENT_TYPE_LATEST  # of ``Metrics.render()``
SOURCES = ("live", "replay", "mock")

_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                 20.0, 40.0, 80.0)
_ITL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                2.5, 5.0)
_E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0)


class Outcome(str, enum.Enum):
    """How a request ended; what the logs, the finish callbacks and the metrics read."""

    SUCCESS = "success"
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_READY = "not_ready"
    REJECTED = "rejected"  # queue full: 429 (or 0.3's in-band too_many_requests)
    DISCONNECTED_BEFORE_STREAMING = "client_disconnected_before_streaming"
    DISCONNECTED_WHILE_STREAMING = "client_disconnected_while_streaming"
    STORE_UNAVAILABLE = "session_store_unavailable"  # 503: the session store could not be reached
    ERROR = "error"


class RejectReason(str, enum.Enum):
    """Why a request was refused before it was generated."""

    QUEUE_FULL = "queue_full"
    NOT_READY = "not_ready"
    BAD_REQUEST = "bad_request"
    PROMPT_TOO_LONG = "prompt_too_long"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    STORE_UNAVAILABLE = "session_store_unavailable"


_DISCONNECT_STAGE = {Outcome.DISCONNECTED_BEFORE_STREAMING: "queued", Outcome.DISCONNECTED_WHILE_STREAMING: "streaming"}


def source_of(generator: Any) -> str:
    """``replay`` when ``generator`` runs a MockTransformer's model, ``mock`` for the generator mock, else ``live``.

    Looks the replay classes up only when chatstream.cassettes.replay is already imported (serving never imports it).
    """
    replay = sys.modules.get("chatstream.cassettes.replay")
    if replay is not None and isinstance(getattr(generator, "model", None), replay.MockModel):
        return "replay"
    mock = sys.modules.get("chatstream.engine.mock_generator")
    if mock is not None and isinstance(generator, mock.ChatGeneratorMock):
        return "mock"
    return "live"


class Metrics:
    """The metric families of one ChatStream. ``running`` / ``waiting`` are read at scrape time, and so is
    ``prefix_cache`` (the generator's ``chatstream.engine.prefix_cache.PrefixCache``, when it has one)."""

    def __init__(self, source: str = "live", running: Callable[[], float] | None = None,
                 waiting: Callable[[], float] | None = None, clock: Callable[[], float] = time.perf_counter,
                 replica: str | None = None, prefix_cache: Any = None) -> None:
        if source not in SOURCES:
            raise ValueError(f"`source` (={source!r}) must be one of {SOURCES}.")
        self.source = source
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if replica is not None:  # which replica answered a scrape (behind a load balancer or Ray Serve)
            Info("chatstream_replica", "The replica this ChatStream runs as.", registry=r).info({"replica": replica})
        self.requests = Counter("chatstream_requests", "Chat requests by endpoint and outcome.",
                                ["endpoint", "outcome", "source"], registry=r)
        self.rejections = Counter("chatstream_request_rejections", "Requests refused before generation, by reason.",
                                  ["endpoint", "reason", "source"], registry=r)
        self.disconnects = Counter("chatstream_client_disconnects", "Clients that left before their answer ended.",
                                   ["endpoint", "stage", "source"], registry=r)
        self.prompt_tokens = Counter("chatstream_prompt_tokens", "Prompt tokens of generated requests.",
                                     ["source"], registry=r)
        self.generation_tokens = Counter("chatstream_generation_tokens", "Generated tokens.", ["source"], registry=r)
        self.ttft = Histogram("chatstream_time_to_first_token_seconds",
                              "From admission to the first generated token.", ["endpoint", "source"],
                              buckets=_TTFT_BUCKETS, registry=r)
        self.itl = Histogram("chatstream_inter_token_latency_seconds", "Between consecutive generated tokens.",
                             ["endpoint", "source"], buckets=_ITL_BUCKETS, registry=r)
        self.e2e = Histogram("chatstream_e2e_request_latency_seconds", "From admission to the end of the answer.",
                             ["endpoint", "source"], buckets=_E2E_BUCKETS, registry=r)
        self.running = Gauge("chatstream_num_requests_running", "Requests holding a running slot.", ["source"],
                             registry=r)
        self.waiting = Gauge("chatstream_num_requests_waiting", "Requests queued for a running slot.", ["source"],
                             registry=r)
        if running is not None:
            self.running.labels(source).set_function(running)
        if waiting is not None:
            self.waiting.labels(source).set_function(waiting)
        if prefix_cache is not None:
            r.register(_PrefixCacheCollector(prefix_cache, source))
        # labelled children, looked up once each (``labels()`` takes a lock and builds a key per call); made on
        # first use, so a series appears in the exposition only once it was used, as before
        self._children: dict[tuple, Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, endpoint: str) -> RequestTimer:
        """A timer for one admitted request, started now."""
        return RequestTimer(self, endpoint)

    def count_rejection(self, endpoint: str, reason: RejectReason) -> None:
        """A request refused before it was admitted or generated (it also counts as a finished request)."""
        self.child(self.rejections, endpoint, RejectReason(reason).value, self.source).inc()

    def count_outcome(self, endpoint: str, outcome: Outcome) -> None:
        outcome = Outcome(outcome)
        self.child(self.requests, endpoint, outcome.value, self.source).inc()
        stage = _DISCONNECT_STAGE.get(outcome)
        if stage is not None:
            self.child(self.disconnects, endpoint, stage, self.source).inc()

    def render(self) -> bytes:
        """The text exposition format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)


class _PrefixCacheCollector:
    """The prefix cache's counts (docs/prefix-cache.md), read from its ``stats`` at scrape time."""

    _COUNTERS = (("hits", "chatstream_prefix_cache_hits", "Requests that reused a cached prompt prefix."),
                 ("misses", "chatstream_prefix_cache_misses", "Requests that found no cached prompt prefix."),
                 ("reused_tokens", "chatstream_prefix_cache_reused_prompt_tokens",
                  "Prompt tokens taken from the prefix cache instead of prefilled."),
                 ("computed_tokens", "chatstream_prefix_cache_computed_prompt_tokens", "Prompt tokens prefilled."),
                 ("evictions", "chatstream_prefix_cache_evictions", "Cached prefixes evicted to stay in budget."))
    _GAUGES = (("bytes", "chatstream_prefix_cache_bytes", "Bytes the cached prefixes hold."),
               ("budget_bytes", "chatstream_prefix_cache_budget_bytes", "The prefix cache's budget (0: off)."),
               ("entries", "chatstream_prefix_cache_entries", "Cached prefixes held."))

    def __init__(self, prefix_cache: Any, source: str) -> None:
        self._cache, self._source = prefix_cache, source

    def describe(self) -> list:
        return [*self._families(None)]

    def collect(self) -> list:
        return [*self._families(self._cache.stats)]

    def _families(self, stats: Any) -> list:
        families = []
        for kinds, family in ((self._COUNTERS, CounterMetricFamily), (self._GAUGES, GaugeMetricFamily)):
            for field, name, documentation in kinds:
                metric = family(name, documentation, labels=["source"])
                if stats is not None:
                    metric.add_metric([self._source], getattr(stats, field))
                families.append(metric)
        return families


class RequestTimer:
    """Times one request: time to first token, gaps between tokens, end to end; counts its tokens."""

    __slots__ = ("_endpoint", "_itl", "_last", "_metrics", "_start", "finished", "tokens")

    def __init__(self, metrics: Metrics, endpoint: str) -> None:
        self._metrics, self._endpoint = metrics, endpoint
        self._start = metrics.clock()
        self._last: float | None = None
        self.tokens = 0
        self.finished = False
        self._itl: Any = None  # the inter-token histogram's child, from the second token on

    def token(self, count: int = 1) -> None:
        """``count`` tokens were generated now (several when they arrived together)."""
        metrics = self._metrics
        now = metrics.clock()
        if self._last is None:
            metrics.child(metrics.ttft, self._endpoint, metrics.source).observe(now - self._start)
        else:
            if self._itl is None:
                self._itl = metrics.child(metrics.itl, self._endpoint, metrics.source)
            self._itl.observe((now - self._last) / count)
        self._last = now
        self.tokens += count

    def finish(self, outcome: Outcome, prompt_tokens: int = 0, completion_tokens: int | None = None) -> None:
        """Record the outcome once (later calls do nothing); tokens default to those seen by ``token``."""
        if self.finished:
            return
        self.finished = True
        metrics, source = self._metrics, self._metrics.source
        metrics.count_outcome(self._endpoint, outcome)
        if prompt_tokens:
            metrics.child(metrics.prompt_tokens, source).inc(prompt_tokens)
        generated = self.tokens if completion_tokens is None else completion_tokens
        if generated:
            metrics.child(metrics.generation_tokens, source).inc(generated)
        if self._last is not None or outcome is Outcome.SUCCESS:
            metrics.child(metrics.e2e, self._endpoint, source).observe(metrics.clock() - self._start)
