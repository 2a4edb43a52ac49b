"""Which concurrency model serves Recommend best on this machine (issue 5), measured.

The same service layer and model (the 100k-item trained catalogue) behind four servers,
each in its own child process, each measured against its own health-check floor:

- ``threads-blas1``: the production server (``grpc.server`` + a 16-thread pool), BLAS
  limited to one thread per product (``ServerOptions.blas_threads=1``, the default);
- ``threads-blas2``: the same with two BLAS threads per product (numpy's default here);
- ``aio-inline``: ``grpc.aio`` with the handler run on the event loop (no thread hop;
  numpy still releases the GIL inside products but the loop waits for it);
- ``aio-to-thread``: ``grpc.aio`` with the handler in ``asyncio.to_thread``.

Recommend k=10 for known users; concurrency 1, 8, 32; client threads in this process.

    python benchmarks/concurrency_model.py [--size 100000] [--duration 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from catalogues import shape_for, trained_model
from machine import machine_description
from serving import child_server, floor_points, prepare_state, serve

MODES = ("threads-blas1", "threads-blas2", "aio-inline", "aio-to-thread")


def shedding_interceptor(limit: int) -> Any:
    """A ``grpc.aio`` interceptor that counts calls from arrival to answer and refuses one
    beyond ``limit`` with RESOURCE_EXHAUSTED (an overload experiment, not the server's)."""
    import grpc

    in_flight = 0

    class Shedding(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            nonlocal in_flight
            handler = await continuation(details)
            if handler is None or handler.unary_unary is None:
                return handler
            behaviour = handler.unary_unary
            if in_flight >= limit:

                async def refuse(request: Any, context: Any) -> Any:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "server busy")

                behaviour = refuse
            else:
                in_flight += 1
                inner = behaviour

                async def counted(request: Any, context: Any) -> Any:
                    nonlocal in_flight
                    try:
                        result = inner(request, context)
                        return (await result) if asyncio.iscoroutine(result) else result
                    finally:
                        in_flight -= 1

                behaviour = counted
            return grpc.unary_unary_rpc_method_handler(
                behaviour,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )

    return Shedding()


def serve_aio(
    state_dir: str, model_dir: str, options: dict[str, Any], ports: Any, stop: Any
) -> None:
    """Recommend and health on a ``grpc.aio`` server; ``options``: ``to_thread`` (run the
    handler in a thread), ``max_concurrent_rpcs`` (None: no limit), ``shed_above`` (our
    own in-flight limit, see :func:`shedding_interceptor`) and ``server_options`` (gRPC
    channel arguments)."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from threadpoolctl import threadpool_limits

    from shelfrank.proto._generated import recommender_pb2 as pb
    from shelfrank.proto._generated import recommender_pb2_grpc as pb_grpc
    from shelfrank.server.grpc_servicer import RecommenderServicer
    from shelfrank.server.registry import load_state
    from shelfrank.server.service import RecommenderService
    from shelfrank.server.store import SQLiteStore

    threadpool_limits(limits=1, user_api="blas")
    to_thread = bool(options.get("to_thread", False))
    sync = RecommenderServicer(
        RecommenderService(SQLiteStore(Path(state_dir) / "events.sqlite3"), load_state(model_dir))
    )

    class Adapter(pb_grpc.RecommenderServicer):
        # The happy path only: the sync servicer's error mapping uses the sync context.
        async def Recommend(  # noqa: N802
            self, request: pb.RecommendRequest, context: Any
        ) -> pb.RecommendResponse:
            if to_thread:
                return await asyncio.to_thread(sync.Recommend, request, context)
            return sync.Recommend(request, context)

    async def main() -> None:
        shed_above = options.get("shed_above")
        server = grpc.aio.server(
            maximum_concurrent_rpcs=options.get("max_concurrent_rpcs"),
            interceptors=[shedding_interceptor(shed_above)] if shed_above else [],
            options=list(options.get("server_options", ())),
        )
        pb_grpc.add_RecommenderServicer_to_server(Adapter(), server)
        checker = health.aio.HealthServicer()
        await checker.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ports.put(port)
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await server.stop(1)

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--out", default="benchmarks/results/concurrency.json")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.duration, args.warmup, args.concurrency = 4000, 0.3, 0.1, "1,4"
    concurrency = [int(c) for c in args.concurrency.split(",")]
    shop, model_dir, _ = trained_model(shape_for(args.size))
    result: dict[str, Any] = {
        "machine": machine_description(),
        "settings": {"items": args.size, "duration_s": args.duration, "k": 10},
        "modes": {},
    }
    with tempfile.TemporaryDirectory(prefix="shelfrank-concurrency-") as tmp:
        state_dir = Path(tmp) / "state"
        state_dir.mkdir()
        prepare_state(state_dir, shop)
        from shelfrank.core.model_format import load_serving_model

        users = list(load_serving_model(model_dir)[0].user_ids.ids)[:500]
        for mode in MODES:
            if mode.startswith("threads"):
                target_fn: Any = serve
                extra: Any = {"blas_threads": 1 if mode.endswith("1") else 2}
            else:
                target_fn, extra = serve_aio, {"to_thread": mode.endswith("to-thread")}
            with child_server(target_fn, str(state_dir), str(model_dir), extra) as (target, _):
                points = floor_points(target, users, concurrency, args.warmup, args.duration)
            for point in points:
                print(
                    f"{mode} c={point['concurrency']}: recommend p50 "
                    f"{point['recommend']['p50_ms']:.2f} ms ({point['p50_ratio']:.2f}x floor), "
                    f"{point['recommend']['throughput_per_s']:.0f}/s "
                    f"({point['throughput_ratio']:.0%} of floor)",
                    flush=True,
                )
            result["modes"][mode] = points
            time.sleep(0.5)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
