"""The gRPC server process: service wiring, health, reflection, auth, metrics, shutdown.

``shelfrank serve`` runs :func:`run`. Embedded default: events and catalogue in SQLite
under ``--state``; models under ``<state>/models``. Without ``--model`` and without a
model in the state directory it serves popularity over what is tracked and trains its
first model once the store holds enough events (``server/bootstrap.py``); ``--demo``
instead stores a synthetic demo shop and trains on it, so a fresh machine serves at once.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from threadpoolctl import threadpool_limits

from shelfrank.core.errors import InvalidInputError, InvariantError, ShelfrankError
from shelfrank.core.events import EventType
from shelfrank.core.ranking import PLAIN, Steering
from shelfrank.proto._generated import (
    edge_sync_pb2,
    edge_sync_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
)
from shelfrank.server.ann import SearchPolicy
from shelfrank.server.bootstrap import FirstModelPolicy, read_state_without_model
from shelfrank.server.callers import DEFAULT_CALLER, Callers
from shelfrank.server.config import TrainConfig
from shelfrank.server.feedback.attribution import DEFAULT_ATTRIBUTION_WINDOW_MS
from shelfrank.server.feedback.loop import (
    PIN_OWNER,
    ExperimentFile,
    FeedbackLoop,
    pinned_versions_of,
)
from shelfrank.server.feedback.recorder import ImpressionRecorder
from shelfrank.server.grpc_servicer import EdgeSyncServicer, RecommenderServicer
from shelfrank.server.model_follower import ModelFollower
from shelfrank.server.registry import ModelRegistry
from shelfrank.server.requests import EventLimits
from shelfrank.server.retrainer import Retrainer
from shelfrank.server.service import RecommenderService, TrackOutcome
from shelfrank.server.serving_state import ServingState
from shelfrank.server.snapshots import SnapshotService
from shelfrank.server.storage import EventStore
from shelfrank.server.stores import open_store
from shelfrank.server.trainer_lease import TTL_SECONDS, TrainerLease

if TYPE_CHECKING:
    from shelfrank.server.dashboard.lifecycle import Dashboard

log = logging.getLogger("shelfrank.server")
SERVICE_NAME = recommender_pb2.DESCRIPTOR.services_by_name["Recommender"].full_name
EDGE_SERVICE_NAME = edge_sync_pb2.DESCRIPTOR.services_by_name["EdgeSync"].full_name
TOKEN_ENV = "SHELFRANK_TOKEN"


class BindError(ShelfrankError, OSError):
    """The server's address cannot be bound (in use, not local, not permitted)."""


ROLES = ("all", "server", "trainer")


@dataclass
class ServerOptions:
    # The embedded store and the local model copies; optional with ``store`` (a replica
    # over PostgreSQL needs no state: its model cache defaults to default_cache_dir()).
    state_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 50051
    model_dir: Path | None = None
    token: str | None = None
    # Named callers, each with its own token (name -> token); see server/callers.py.
    callers: dict[str, str] = field(default_factory=dict)
    reflection: bool = True
    metrics_port: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Handler threads. More than the cores convoy on the GIL: on the 2-core machine of
    # benchmarks/RESULTS.md 4 served 9-55% more Recommend calls/s than 16 (SQLite and
    # PostgreSQL alike); but an EdgeSync stream holds one for as long as it streams.
    rpc_threads: int = 16
    # Calls admitted at once (running or queued for a worker); beyond it gRPC answers
    # RESOURCE_EXHAUSTED at once, so overload sheds load instead of growing the queue.
    max_concurrent_rpcs: int = 256
    # Event rate limits per user and per connection (RESOURCE_EXHAUSTED beyond them).
    event_limits: EventLimits = field(default_factory=EventLimits)
    # Threads per BLAS call. One: each request's product runs on the thread that serves
    # it, so concurrent requests use the cores instead of fighting over them (measured in
    # benchmarks/RESULTS.md: 2 BLAS threads per call cut throughput at 32 clients to 1%).
    # Process-wide: only run() sets it.
    blas_threads: int = 1
    # Top-k searches running at once (the rest wait their turn; see RecommenderService).
    scoring_threads: int = 1
    # What a Recommend gets for the steering options it leaves out (core/ranking.py).
    steering: Steering = PLAIN
    # exact | ann | auto: see shelfrank.server.ann.SearchPolicy.
    search: SearchPolicy = field(default_factory=SearchPolicy)
    grace_seconds: float = 10.0
    # Move every object alive once the server is built (modules, model, catalogue) out of
    # the cyclic collector's scans (gc.freeze): a full collection then walks only what
    # requests create, 75 ms -> ~2 ms here, a pause every few hundred Track batches
    # (benchmarks/RESULTS.md, "Ingest"). It affects the whole process: only run() does it.
    freeze_startup_objects: bool = True
    retrain_interval_seconds: float | None = None
    train_config: TrainConfig = field(default_factory=TrainConfig)
    # With no model yet, store a synthetic demo shop and train on it (``serve --demo``);
    # otherwise the server starts empty and serves popularity over what is tracked.
    demo: bool = False
    # With no model yet, the first one is trained once the store holds this many events
    # from this many users (before that: popularity over the tracked events).
    first_model_events: int = 1_000
    first_model_users: int = 50
    # Experiments (TOML or JSON, reloaded when the file changes; core/experiments.py).
    experiments: Path | None = None
    # Record every response as an impression (server/feedback/recorder.py).
    record_impressions: bool = True
    # Feedback without a recommendation id counts for the latest response that showed
    # the item to the user at most this long before (server/feedback/attribution.py).
    attribution_window_ms: int = DEFAULT_ATTRIBUTION_WINDOW_MS
    # The event store: a PostgreSQL URL shared by every process, or None for the embedded
    # SQLite store under ``state_dir``. Models are in the store; each process keeps
    # verified local copies under ``state_dir`` (or default_cache_dir()).
    store: str | None = None
    # all: serve and be the trainer when elected; server: serve, never train; trainer:
    # train when elected and serve only health and metrics (kept out of the balancer).
    role: str = "all"
    # How often a process looks for a newly published model (seconds).
    follow_seconds: float = 1.0
    # The web dashboard and its JSON API on this port (same host; 0: any free port;
    # None: off, and nothing of it runs, its load sampler included). HTTPS with the TLS
    # certificate and key above.
    http_port: int | None = None
    # Host names the dashboard answers besides the bound address and the loopback names
    # (server/dashboard/hosts.py: DNS rebinding); "*.example.com" covers subdomains, "*"
    # any. Bound to every address without any: any name, with a warning.
    http_allowed_hosts: tuple[str, ...] = ()
    # The trainer lease's time to live: how long a dead trainer blocks another (seconds).
    trainer_lease_seconds: float = TTL_SECONDS


def default_cache_dir() -> Path:
    """Where a process without a state directory keeps its local model copies."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shelfrank"


def cache_dir(options: ServerOptions) -> Path:
    return options.state_dir if options.state_dir is not None else default_cache_dir()


class Metrics:
    def __init__(self, latency_ring: int = 0) -> None:
        # With the dashboard: each Recommend's latency (seconds) appended, nothing more on
        # the call's path; the dashboard's sampler drains it (server/dashboard/sampler.py).
        self.recommend_latencies: deque[float] | None = (
            deque(maxlen=latency_ring) if latency_ring > 0 else None
        )
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "shelfrank_requests_total",
            "RPCs by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shelfrank_request_seconds",
            "RPC latency by method",
            ["method"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.events = Counter(
            "shelfrank_events_total",
            "Tracked events by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.impressions_written = Counter(
            "shelfrank_impressions_written_total",
            "Served responses stored as impressions",
            registry=self.registry,
        )
        self.impressions_dropped = Counter(
            "shelfrank_impressions_dropped_total",
            "Impressions dropped while the store was away (oldest first, beyond the queue)",
            registry=self.registry,
        )
        self.served = Counter(
            "shelfrank_served_total",
            "Responses served by surface, experiment and variant (empty: none)",
            ["surface", "experiment", "variant"],
            registry=self.registry,
        )
        self.attributed = Counter(
            "shelfrank_attributed_events_total",
            "Accepted events carrying the id of a response this process served lately, for "
            "an item it showed to that user, by experiment, variant and event type (live; "
            "GetReport applies the full attribution rule across processes)",
            ["experiment", "variant", "type"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "shelfrank_model_info", "Serving model (value 1)", ["version"], registry=self.registry
        )
        self.users = Gauge(
            "shelfrank_model_users", "Users in the serving model", registry=self.registry
        )
        self.items = Gauge(
            "shelfrank_model_items", "Items in the serving model", registry=self.registry
        )

    def totals(self) -> tuple[float, float]:
        """(events accepted, Recommend calls) since the start: the dashboard's rates."""
        sample = self.registry.get_sample_value
        return (
            sample("shelfrank_events_total", {"outcome": "accepted"}) or 0.0,
            sample("shelfrank_request_seconds_count", {"method": "Recommend"}) or 0.0,
        )

    def on_track(self, outcome: TrackOutcome) -> None:
        self.events.labels("accepted").inc(outcome.accepted)
        self.events.labels("duplicate").inc(outcome.duplicates)
        self.events.labels("rejected").inc(len(outcome.errors))

    def on_served(self, surface: str, experiment: str, variant: str) -> None:
        self.served.labels(surface, experiment, variant).inc()

    def on_attributed(self, experiment: str, variant: str, kind: EventType) -> None:
        self.attributed.labels(experiment, variant, kind.label).inc()

    def on_state(self, state: ServingState) -> None:
        self.model_info.clear()
        self.model_info.labels(state.model_version).set(1)
        self.users.set(len(state.model.user_ids))
        self.items.set(len(state.model.items))


class ObservingInterceptor(grpc.ServerInterceptor):
    """Bearer-token check (when configured) and per-method metrics."""

    def __init__(self, callers: Callers, metrics: Metrics) -> None:
        self.callers = callers
        self.metrics = metrics
        # One observed handler per method, built once: this runs on every call, and under
        # load the server's throughput is its Python time per call. (Racing first calls may
        # both build one: same result.)
        self._observed: dict[str, Any] = {}

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or details.method.startswith(("/grpc.health.", "/grpc.reflection.")):
            return handler  # health and reflection stay open for probes and tools
        method = details.method.rsplit("/", 1)[-1]
        if self.callers.required:
            metadata = dict(details.invocation_metadata or ())
            if self.callers.authenticate(metadata.get("authorization")) is None:
                return self._denied(handler, method)
        if handler.unary_unary is None:
            return handler
        observed = self._observed.get(details.method)
        if observed is None or observed[0] is not handler:
            observed = (handler, self._observing(handler, method))
            self._observed[details.method] = observed
        return observed[1]

    def _denied(self, handler: Any, method: str) -> Any:
        self.metrics.requests.labels(method, "UNAUTHENTICATED").inc()

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        # The refusal must have the method's shape (EdgeSync streams its answer).
        make = (
            grpc.unary_stream_rpc_method_handler
            if handler.unary_stream is not None
            else grpc.unary_unary_rpc_method_handler
        )
        return make(
            deny,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _observing(self, handler: Any, method: str) -> Any:
        inner = handler.unary_unary
        latency = self.metrics.latency.labels(method)
        succeeded = self.metrics.requests.labels(method, "OK")
        requests = self.metrics.requests
        ring = self.metrics.recommend_latencies
        keep = ring.append if ring is not None and method == "Recommend" else None

        def observed(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                response = inner(request, context)
            except Exception:
                # abort() stored the status on the context; grpc's stubs do not declare code()
                status = getattr(context, "code", lambda: None)()
                requests.labels(method, status.name if status is not None else "UNKNOWN").inc()
                raise
            finally:
                elapsed = time.perf_counter() - started
                latency.observe(elapsed)
                if keep is not None:
                    keep(elapsed)
            succeeded.inc()
            return response

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


# Recommend latencies kept between two load samples of the dashboard (10 s apart).
LATENCY_RING = 200_000

# How soon the main thread notices a signal that the kernel delivered to another thread.
SIGNAL_POLL_SECONDS = 0.2


@dataclass(kw_only=True)
class RunningServer:
    server: grpc.Server
    port: int
    service: RecommenderService
    health: health.HealthServicer
    retrainer: Retrainer
    follower: ModelFollower
    metrics: Metrics
    grace_seconds: float
    metrics_http: WSGIServer | None = None
    dashboard: Dashboard | None = None

    @property
    def metrics_port(self) -> int | None:
        return int(self.metrics_http.server_port) if self.metrics_http is not None else None

    @property
    def http_port(self) -> int | None:
        """The dashboard's bound port (None: no dashboard)."""
        return self.dashboard.port if self.dashboard is not None else None

    def stop(self) -> None:
        """Graceful: the dashboard stops first (it calls the service), then NOT_SERVING at
        once, refuse new calls, let in-flight ones finish within the grace period, then
        close the store."""
        if self.dashboard is not None:
            self.dashboard.stop()
        self.health.enter_graceful_shutdown()
        self.follower.stop(timeout=self.grace_seconds)
        self.retrainer.stop(timeout=self.grace_seconds)
        self.server.stop(self.grace_seconds).wait()
        if self.service.feedback is not None:
            self.service.feedback.close()  # writes the impressions still pending
        self.service.store.close()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()
            self.metrics_http.server_close()


def initial_state(
    options: ServerOptions, store: EventStore, registry: ModelRegistry
) -> tuple[ServingState, int]:
    """The state to serve and its publication number in the store: ``--model`` if given
    (imported once), else the store's current model, else (no model yet) popularity over
    the store's events; with ``--demo``, a first model trained on a synthetic demo shop
    stored like any other data."""
    if options.model_dir is not None:
        # Imported once: later starts with the same --model keep serving the versions
        # retrained since (a restart serves what was serving).
        registry.import_once(options.model_dir)
    current = registry.load_current()
    if current is not None:
        return current[0], current[1].published
    if not options.demo:
        log.info("no model yet: serving popularity until the store holds enough events")
        return read_state_without_model(store, options.train_config), 0
    from shelfrank.datasets.synth import SynthConfig, generate
    from shelfrank.server.hybrid import HybridModel
    from shelfrank.server.ingest import ingest
    from shelfrank.server.retrainer import store_features, store_interactions

    log.info("--demo: storing a synthetic demo shop and training a first model on it")
    demo = generate(SynthConfig(items=2_000, users=1_500, events=60_000, seed=7))
    ingest(store, demo.interactions, items=demo.items, users=demo.users)
    erasures = store.last_erasure()
    watermark = store.last_seq()
    model = HybridModel.train(
        store_interactions(store, watermark),
        options.train_config,
        items=store_features(store.item_features(), "item_id"),
        users=store_features(store.user_features(), "user_id"),
    )
    registry.save(model, watermark_seq=watermark, erasures_through=erasures)
    loaded = registry.load_current()
    if loaded is None:  # just published: only a concurrent writer could undo it
        raise InvariantError("the demo model was saved but no model is current")
    return loaded[0], loaded[1].published


def start(options: ServerOptions) -> RunningServer:
    """Builds and starts the server in this process, changing nothing process-wide (no
    thread limits, no GC settings, no signal handlers: :func:`run` does those)."""
    if options.rpc_threads < 1:
        raise InvalidInputError(f"rpc_threads: must be at least 1, got {options.rpc_threads}")
    if options.max_concurrent_rpcs < 1:
        raise InvalidInputError(
            f"max_concurrent_rpcs: must be at least 1, got {options.max_concurrent_rpcs}"
        )
    if options.role not in ROLES:
        raise InvalidInputError(f"role: must be one of {', '.join(ROLES)}, got {options.role!r}")
    location = options.store or options.state_dir
    if location is None:
        raise InvalidInputError("state_dir: needed when no store URL is given")
    store = open_store(location)
    try:
        return _started(options, store)
    except BaseException:
        store.close()  # a start that fails leaves nothing open
        raise


def _started(options: ServerOptions, store: EventStore) -> RunningServer:
    registry = ModelRegistry(store, cache_dir(options), search=options.search)
    experiments = None if options.experiments is None else ExperimentFile(options.experiments)
    if experiments is not None:
        # Before a model is imported (which prunes old versions), pin what the file pins
        # if the store holds it all; the FeedbackLoop checks and pins again after it.
        store.pin_models(PIN_OWNER, pinned_versions_of(experiments.experiments))
    state, published = initial_state(options, store, registry)
    metrics = Metrics(latency_ring=LATENCY_RING if options.http_port is not None else 0)
    feedback = FeedbackLoop(
        store,
        experiments=experiments,
        record=options.record_impressions,
        window_ms=options.attribution_window_ms,
        on_served=metrics.on_served,
        on_attributed=metrics.on_attributed,
        load_model=registry.load,
        recorder=(
            ImpressionRecorder(
                store,
                on_written=metrics.impressions_written.inc,
                on_dropped=metrics.impressions_dropped.inc,
            )
            if options.record_impressions
            else None
        ),
    )
    # Bound before anything starts, as the gRPC port: a dashboard port in use fails here.
    http_socket = _bind_dashboard(options)
    try:
        return _serving(options, store, registry, state, published, metrics, feedback, http_socket)
    except BaseException:
        feedback.close()  # its writer thread stops with a start that fails
        if http_socket is not None:
            http_socket.close()
        raise


def _bind_dashboard(options: ServerOptions) -> socket.socket | None:
    if options.http_port is None:
        return None
    from shelfrank.server.dashboard.runner import HttpBindError, bind

    try:
        return bind(options.host, options.http_port)
    except HttpBindError as exc:
        raise BindError(str(exc)) from None


def _serving(
    options: ServerOptions,
    store: EventStore,
    registry: ModelRegistry,
    state: ServingState,
    published: int,
    metrics: Metrics,
    feedback: FeedbackLoop,
    http_socket: socket.socket | None = None,
) -> RunningServer:
    service = RecommenderService(
        store,
        state,
        limits=options.event_limits,
        scoring_threads=options.scoring_threads,
        published=published,
        steering=options.steering,
        feedback=feedback,
    )
    token = options.token or os.environ.get(TOKEN_ENV) or None
    tokens = {**({DEFAULT_CALLER: token} if token else {}), **options.callers}
    callers = Callers(tokens)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=options.rpc_threads, thread_name_prefix="rpc"),
        interceptors=[ObservingInterceptor(callers, metrics)],
        maximum_concurrent_rpcs=options.max_concurrent_rpcs,
        options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
    )
    serves = options.role != "trainer"  # a dedicated trainer answers health and metrics only
    if serves:
        recommender_pb2_grpc.add_RecommenderServicer_to_server(
            RecommenderServicer(service, callers), server
        )
        edge_sync_pb2_grpc.add_EdgeSyncServicer_to_server(
            EdgeSyncServicer(SnapshotService(service)), server
        )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if options.reflection:
        served = (SERVICE_NAME, EDGE_SERVICE_NAME) if serves else ()
        reflection.enable_server_reflection(
            (*served, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
    address = f"{options.host}:{options.port}"
    try:
        if options.tls_cert and options.tls_key:
            credentials = grpc.ssl_server_credentials(
                [(options.tls_key.read_bytes(), options.tls_cert.read_bytes())]
            )
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio's way of saying the address cannot be bound
        raise BindError(f"cannot bind {address}: {exc}") from None
    if port == 0:
        raise BindError(f"cannot bind {address}")
    trains = options.role != "server"
    retrainer = Retrainer(
        service,
        registry,
        options.train_config,
        interval_seconds=options.retrain_interval_seconds if trains else None,
        first_model=FirstModelPolicy(options.first_model_events, options.first_model_users),
        lease=TrainerLease(store, ttl_seconds=options.trainer_lease_seconds),
        enabled=trains,
    )
    service.observers.append(retrainer)
    follower = ModelFollower(registry, service, poll_seconds=options.follow_seconds)
    # Started before the rest: a dashboard that cannot start leaves nothing running.
    dashboard = (
        _dashboard(options, service, metrics, tokens, port, http_socket)
        if http_socket is not None
        else None
    )
    try:
        return _started_serving(
            options,
            server=server,
            port=port,
            service=service,
            health_servicer=health_servicer,
            serves=serves,
            retrainer=retrainer,
            follower=follower,
            metrics=metrics,
            dashboard=dashboard,
        )
    except BaseException:
        if dashboard is not None:
            dashboard.stop()
        raise


def _started_serving(
    options: ServerOptions,
    *,
    server: grpc.Server,
    port: int,
    service: RecommenderService,
    health_servicer: health.HealthServicer,
    serves: bool,
    retrainer: Retrainer,
    follower: ModelFollower,
    metrics: Metrics,
    dashboard: Dashboard | None,
) -> RunningServer:
    server.start()
    for name in ("", SERVICE_NAME, EDGE_SERVICE_NAME) if serves else ("",):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    retrainer.start()
    follower.start()
    metrics_http = None
    if options.metrics_port is not None:
        metrics_http, _ = start_http_server(
            options.metrics_port, addr=options.host, registry=metrics.registry
        )
    metrics.on_state(service.state)
    service.observers.append(metrics)
    retrainer.train_first_when_ready()  # data may have been ingested before this start
    serving = (
        f"model {service.state.model_version}"
        if service.state.trained
        else "popularity (no model yet)"
    )
    log.info("serving %s on %s:%d", serving, options.host, port)
    if dashboard is not None:
        scheme = "https" if dashboard.tls else "http"
        log.info("dashboard on %s://%s:%d/", scheme, options.host, dashboard.port)
    return RunningServer(
        server=server,
        port=port,
        service=service,
        health=health_servicer,
        retrainer=retrainer,
        follower=follower,
        metrics=metrics,
        grace_seconds=options.grace_seconds,
        metrics_http=metrics_http,
        dashboard=dashboard,
    )


def _dashboard(
    options: ServerOptions,
    service: RecommenderService,
    metrics: Metrics,
    tokens: dict[str, str],
    port: int,
    http_socket: socket.socket,
) -> Dashboard:
    """The dashboard over this process's service, behind the callers' tokens, over HTTPS
    when the server has TLS, with the sampler of its Recommend latencies (imported only
    when on: serving without it loads no web framework)."""
    from shelfrank.server.dashboard.auth import Access
    from shelfrank.server.dashboard.context import DashboardContext
    from shelfrank.server.dashboard.hosts import allowed_hosts
    from shelfrank.server.dashboard.lifecycle import start_dashboard
    from shelfrank.server.dashboard.runner import HttpBindError
    from shelfrank.server.dashboard.sampler import ReplicaSampler

    if metrics.recommend_latencies is None:
        raise InvariantError("the dashboard needs the Recommend latency ring")
    replica = f"{socket.gethostname()}:{port}"
    tls = (options.tls_cert, options.tls_key) if options.tls_cert and options.tls_key else None
    context = DashboardContext(
        service=service,
        access=Access(tokens),
        replica=replica,
        role=options.role,
        allowed_hosts=allowed_hosts(options.host, options.http_allowed_hosts),
        tls=tls is not None,
    )
    sampler = ReplicaSampler(
        service.store, replica, latencies=metrics.recommend_latencies, totals=metrics.totals
    )
    try:
        return start_dashboard(context, http_socket, sampler, tls)
    except HttpBindError as exc:
        raise BindError(str(exc)) from None


def settle_serving_process(options: ServerOptions) -> None:
    """The process-wide settings of a process that exists to serve, made once its server
    is started (``shelfrank serve``; benchmarks' server processes too): BLAS threads per
    call, and the start-up objects frozen out of the GC's scans."""
    if options.blas_threads < 1:
        raise InvalidInputError(f"blas_threads: must be at least 1, got {options.blas_threads}")
    # Lasting, and only for the BLAS libraries loaded by now (start() imported what
    # serving uses; one loaded later for training keeps its default). LightFM's OpenMP
    # threads are set per fit, not by this.
    threadpool_limits(limits=options.blas_threads, user_api="blas")
    if options.freeze_startup_objects:
        gc.collect()  # garbage from start-up is freed, not frozen
        gc.freeze()


def run(options: ServerOptions) -> None:
    """The ``shelfrank serve`` process: start, settle the process-wide settings, then serve
    until SIGTERM or SIGINT and shut down gracefully."""
    if options.blas_threads < 1:
        raise InvalidInputError(f"blas_threads: must be at least 1, got {options.blas_threads}")
    running = start(options)
    settle_serving_process(options)
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: shutting down (grace %.1fs)", signum, options.grace_seconds)
        stopping.set()

    def on_full_retrain(signum: int, frame: Any) -> None:
        def full() -> None:
            try:
                running.retrainer.retrain_now(full=True)
            except Exception:
                log.exception("on-demand full retrain failed; the previous model keeps serving")

        threading.Thread(target=full, name="shelfrank-full-retrain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, on_full_retrain)
    print(f"shelfrank serving on {options.host}:{running.port}", flush=True)
    # Timed waits, not one blocking wait: when the kernel hands SIGTERM to one of gRPC's
    # threads, CPython only runs the handler once the main thread wakes up by itself.
    while not stopping.wait(SIGNAL_POLL_SECONDS):
        pass
    running.stop()
