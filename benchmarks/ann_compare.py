"""Approximate maximum-inner-product search (MIPS): usearch vs faiss vs hnswlib, on this machine.

What is searched: a recommender scores item ``i`` for user ``u`` as ``u . v_i + b_i`` (64
dims, float32). The bias is folded into the vectors, ``item' = [v, b]`` and ``query' = [u, 1]``,
so the exact ranking is the top-k of ``item' . query'`` (the user's own bias is constant per
query and does not change the ranking). Two index spaces are compared:

* ``ip``: the 65-dim folded vectors in an inner-product HNSW graph;
* ``l2`` / ``cos``: the standard MIPS reduction, ``item'' = [item', sqrt(M^2 - |item'|^2)]`` and
  ``query'' = [query', 0]`` with ``M = max |item'|``. Every item then has norm ``M``, so the
  smallest L2 distance, and the largest cosine, is the largest inner product: the ranking is
  exact, and the graph is built in a metric space, where HNSW is known to work well.

Data: one real hybrid model (ml-100k-sized synthetic shop, 64 components, 2 epochs, trained by
``serving.train_base``), its item table tiled to N rows with small noise (``serving.tiled``).
Queries are the model's 943 user vectors, taken in order and cycled.

For each library and a small grid of parameters (HNSW M / connectivity, ef_construction,
storage dtype) the index is built once with 2 threads (timed; the process's RSS growth and
the index's serialized size, ``index_bytes``, are recorded; usearch also reports its own
``memory_usage``, which includes its arena reservation), then for each ef_search value 500
queries are run one at a time with 1 search thread, as a server handles one request
(per-call wall clock, each library's public Python call included, after a warm-up), at
k=10. usearch's public ``search`` has a thick Python layer, so its compiled ``search_many``
is timed too (``compiled_call_p50_us``). Recall@10 is against the
exact top-10 of ``item' . query'``. The baseline is exact numpy brute force in the same run:
``item_matrix @ query'`` then ``argpartition`` and a sort of the top 10, with BLAS limited to
1 thread by threadpoolctl; every p50 is also reported as a ratio to that baseline's p50.

Filters: a random filter allowing ~10% of items, exact ground truth = the top-10 allowed
items. Compared, per library, on one representative index: native filtered search where the
Python API has one (faiss ``SearchParametersHNSW(sel=IDSelectorBitmap | IDSelectorBatch)``,
in C++; hnswlib ``knn_query(filter=callable)``, a Python callback per visited node) and
"over-fetch then filter" (ask for ``fetch`` neighbours, drop the disallowed ones in numpy),
the only option for usearch, whose Python ``search`` takes no predicate. Both hold the filter
exactly (no disallowed item is returned); they differ in recall and in how often fewer than
k results come back.

    cd benchmarks && python ann_compare.py [--sizes 100000,1000000] [--smoke]

Writes ``results/ann_compare.json`` (all raw figures) and ``results/ann_compare.png`` (recall
vs p50 at the largest size) and prints markdown tables.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import faiss
import hnswlib
import numpy as np
from machine import machine_description  # benchmarks/machine.py
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits
from usearch.index import Index as UsearchIndex

K = 10
BUILD_THREADS = 2
QUERIES = 500
WARMUP = 50
FILTER_FRACTION = 0.10
RESULTS = Path(__file__).resolve().parent / "results"

F32 = NDArray[np.float32]
I64 = NDArray[np.int64]


# -- vectors ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Vectors:
    items_ip: F32  # (N, 65): [v, b]
    queries_ip: F32  # (Q, 65): [u, 1]
    items_l2: F32  # (N, 66): [v, b, sqrt(M^2 - |[v, b]|^2)]
    queries_l2: F32  # (Q, 66): [u, 1, 0]

    def items(self, space: str) -> F32:
        return self.items_ip if space == "ip" else self.items_l2

    def queries(self, space: str) -> F32:
        return self.queries_ip if space == "ip" else self.queries_l2


def fold(item_vectors: F32, item_biases: F32, user_vectors: F32, queries: int) -> Vectors:
    items_ip = np.ascontiguousarray(np.hstack([item_vectors, item_biases[:, None]]), np.float32)
    users = user_vectors[np.arange(queries) % len(user_vectors)]
    queries_ip = np.ascontiguousarray(
        np.hstack([users, np.ones((queries, 1), np.float32)]), np.float32
    )
    norms2 = np.einsum("ij,ij->i", items_ip, items_ip, dtype=np.float64)
    extra = np.sqrt(np.maximum(norms2.max() - norms2, 0.0)).astype(np.float32)
    items_l2 = np.ascontiguousarray(np.hstack([items_ip, extra[:, None]]), np.float32)
    queries_l2 = np.ascontiguousarray(
        np.hstack([queries_ip, np.zeros((queries, 1), np.float32)]), np.float32
    )
    return Vectors(items_ip, queries_ip, items_l2, queries_l2)


def exact_top(items: F32, queries: F32, k: int, mask: NDArray[np.bool_] | None = None) -> I64:
    """Exact top-k by inner product (ground truth), in blocks of queries, all BLAS threads."""
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), 64):
        scores = queries[start : start + 64] @ items.T
        if mask is not None:
            scores[:, ~mask] = -np.inf
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start : start + 64] = np.take_along_axis(top, order, axis=1)
    return out


def recall(found: Sequence[NDArray[Any]], truth: I64) -> float:
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def latency_summary(ns: list[int]) -> dict[str, float]:
    us = np.asarray(ns, np.float64) / 1e3
    return {
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "mean_us": float(us.mean()),
    }


def timed_queries(
    search: Callable[[F32], NDArray[Any]], queries: F32, warmup: int = WARMUP
) -> tuple[list[NDArray[Any]], list[int]]:
    """One query at a time; per-call wall clock in ns."""
    for q in queries[:warmup]:
        search(q)
    found: list[NDArray[Any]] = []
    ns: list[int] = []
    for q in queries:
        t0 = time.perf_counter_ns()
        ids = search(q)
        ns.append(time.perf_counter_ns() - t0)
        found.append(ids)
    return found, ns


# -- the three libraries behind one interface ----------------------------------------------------
@dataclass(frozen=True)
class Config:
    library: str  # usearch | faiss | hnswlib
    space: str  # ip | l2 | cos
    m: int
    ef_construction: int
    storage: str = "f32"  # f32 | f16 | i8 (usearch) | sq8 (faiss HNSWSQ)

    @property
    def name(self) -> str:
        return f"{self.library}/{self.space}/{self.storage}/M{self.m}/efc{self.ef_construction}"


class AnnIndex(Protocol):
    def set_ef(self, ef: int) -> None: ...
    def search(self, q: F32, k: int) -> NDArray[Any]: ...
    def size_bytes(self) -> int: ...


class UsearchAnn:
    def __init__(self, config: Config, items: F32) -> None:
        self.index = UsearchIndex(
            ndim=items.shape[1],
            metric=config.space,  # "ip" | "l2sq" | "cos"
            dtype=config.storage,
            connectivity=config.m,
            expansion_add=config.ef_construction,
        )
        self.index.add(np.arange(len(items), dtype=np.uint64), items, threads=BUILD_THREADS)

    def set_ef(self, ef: int) -> None:
        self.index.expansion_search = ef

    def search(self, q: F32, k: int) -> NDArray[Any]:
        return self.index.search(q, k, threads=1).keys

    def search_raw(self, q: F32, k: int) -> NDArray[Any]:
        """The compiled ``search_many`` the public wrapper calls, without its Python layer."""
        return self.index._compiled.search_many(q[None, :], k, False, 1)[0][0]

    def size_bytes(self) -> int:
        return int(self.index.serialized_length)

    def memory_bytes(self) -> int:
        return int(self.index.memory_usage)


class FaissAnn:
    def __init__(self, config: Config, items: F32) -> None:
        metric = faiss.METRIC_INNER_PRODUCT if config.space == "ip" else faiss.METRIC_L2
        d = items.shape[1]
        faiss.omp_set_num_threads(BUILD_THREADS)
        if config.storage == "sq8":
            self.index: Any = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, config.m, metric)
            self.index.train(items)
        else:
            self.index = faiss.IndexHNSWFlat(d, config.m, metric)
        self.index.hnsw.efConstruction = config.ef_construction
        self.index.add(items)
        faiss.omp_set_num_threads(1)
        self.ef = 16

    def set_ef(self, ef: int) -> None:
        self.ef = ef
        self.index.hnsw.efSearch = ef

    def search(self, q: F32, k: int) -> NDArray[Any]:
        return self.index.search(q[None, :], k)[1][0]

    def search_params(self, q: F32, k: int, params: Any) -> NDArray[Any]:
        return self.index.search(q[None, :], k, params=params)[1][0]

    def size_bytes(self) -> int:
        return int(faiss.serialize_index(self.index).nbytes)


class HnswlibAnn:
    def __init__(self, config: Config, items: F32) -> None:
        self.index = hnswlib.Index(space=config.space, dim=items.shape[1])
        self.index.init_index(
            max_elements=len(items), M=config.m, ef_construction=config.ef_construction
        )
        self.index.add_items(items, np.arange(len(items)), num_threads=BUILD_THREADS)
        self.index.set_num_threads(1)

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(ef)

    def search(self, q: F32, k: int) -> NDArray[Any]:
        return self.index.knn_query(q, k=k, num_threads=1)[0][0]

    def search_filter(self, q: F32, k: int, allowed: Callable[[int], bool]) -> NDArray[Any]:
        try:
            return self.index.knn_query(q, k=k, num_threads=1, filter=allowed)[0][0]
        except RuntimeError:  # fewer than k allowed items reached
            return np.empty(0, np.int64)

    def size_bytes(self) -> int:
        return int(self.index.index_file_size())


def build(config: Config, items: F32) -> AnnIndex:
    if config.library == "usearch":
        return UsearchAnn(config, items)
    if config.library == "faiss":
        return FaissAnn(config, items)
    return HnswlibAnn(config, items)


def grid(name: str) -> list[Config]:
    """``smoke``: one build per library; ``lean``: the 1M set (the MIPS reduction at M=32,
    f32: at 100k it beat ``ip`` for all three, and f16/i8/sq8 only trade recall for memory);
    ``full``: the whole grid."""
    if name == "smoke":
        return [
            Config("usearch", "cos", 16, 100),
            Config("faiss", "l2", 16, 100),
            Config("hnswlib", "l2", 16, 100),
        ]
    if name == "lean":
        return [
            Config("usearch", "cos", 32, 200),
            Config("faiss", "l2", 32, 200),
            Config("hnswlib", "l2", 32, 200),
        ]
    return [
        Config("usearch", "ip", 16, 100),
        Config("usearch", "ip", 32, 200),
        Config("usearch", "cos", 16, 100),
        Config("usearch", "cos", 32, 200),
        Config("usearch", "cos", 32, 200, "f16"),
        Config("usearch", "cos", 32, 200, "i8"),
        Config("faiss", "ip", 16, 100),
        Config("faiss", "ip", 32, 200),
        Config("faiss", "l2", 16, 100),
        Config("faiss", "l2", 32, 200),
        Config("faiss", "l2", 32, 200, "sq8"),
        Config("hnswlib", "ip", 16, 100),
        Config("hnswlib", "ip", 32, 200),
        Config("hnswlib", "l2", 16, 100),
        Config("hnswlib", "l2", 32, 200),
    ]


# -- measurements --------------------------------------------------------------------------------
@dataclass
class SizeResult:
    size: int
    data: str
    grid: str
    queries: int
    exact_numpy: dict[str, float]
    pruned_exact: dict[str, Any] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    filtered: list[dict[str, Any]] = field(default_factory=list)


def measure_exact(items: F32, queries: F32, truth: I64) -> dict[str, float]:
    def search(q: F32) -> I64:
        scores = items @ q
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    with threadpool_limits(limits=1):
        found, ns = timed_queries(search, queries, warmup=min(WARMUP, 10))
    return {**latency_summary(ns), "recall": recall(found, truth)}


def measure_pruned(items_ip: F32, queries: F32, truth: I64) -> dict[str, Any]:
    """shelfrank's exact search (``core.pruned_scan``) on the same items and queries."""
    from shelfrank.core.ids import IdMap
    from shelfrank.core.scoring import ScoringTable

    vectors = np.ascontiguousarray(items_ip[:, :-1])
    biases = np.ascontiguousarray(items_ip[:, -1])
    t0 = time.perf_counter()
    table = ScoringTable(IdMap(str(i) for i in range(len(vectors))), vectors, biases)
    build_s = time.perf_counter() - t0
    scan = table.pruned
    with threadpool_limits(limits=1):
        found, ns = timed_queries(
            lambda q: table.recommend(np.ascontiguousarray(q[:-1]), 0.0, K).indices,
            queries,
            warmup=min(WARMUP, 10),
        )
    extra = 0
    if scan is not None:
        extra = scan.order.nbytes + scan.projected.nbytes + scan.item_residual.nbytes
        extra += scan.low.nbytes + scan.high.nbytes + scan.residual.nbytes + scan.offsets.nbytes
    return {
        **latency_summary(ns),
        "recall": recall(found, truth),
        "build_s": round(build_s, 2),
        "pruned": scan is not None,
        "rank": scan.rank if scan else None,
        "index_bytes": extra,
    }


def measure_config(
    config: Config, vectors: Vectors, truth: I64, ef_values: Sequence[int], exact_p50: float
) -> tuple[AnnIndex, dict[str, Any]]:
    items = vectors.items(config.space)
    queries = vectors.queries(config.space)
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    index = build(config, items)
    build_s = time.perf_counter() - t0
    rss_delta = rss_bytes() - rss0
    row: dict[str, Any] = {
        **asdict(config),
        "name": config.name,
        "dims": int(items.shape[1]),
        "build_s": build_s,
        "build_threads": BUILD_THREADS,
        "search_threads": 1,
        "index_bytes": index.size_bytes(),  # serialized size, the same for all three
        "rss_delta_bytes": rss_delta,
        "points": [],
    }
    raw_search: Callable[[F32, int], NDArray[Any]] | None = None
    if isinstance(index, UsearchAnn):
        row["library_memory_bytes"] = index.memory_bytes()
        raw_search = index.search_raw
    for ef in ef_values:
        index.set_ef(ef)
        found, ns = timed_queries(lambda q: index.search(q, K), queries)
        lat = latency_summary(ns)
        point: dict[str, Any] = {
            "ef_search": ef,
            **lat,
            "recall": recall(found, truth),
            "p50_vs_exact": lat["p50_us"] / exact_p50,
        }
        if raw_search is not None:
            _, raw_ns = timed_queries(lambda q: raw_search(q, K), queries)
            point["compiled_call_p50_us"] = latency_summary(raw_ns)["p50_us"]
        row["points"].append(point)
    best = max(p["recall"] for p in row["points"])
    print(f"  {config.name}: build {build_s:.1f}s, best recall {best:.3f}", flush=True)
    return index, row


def filter_points(
    label: str,
    method: str,
    search: Callable[[F32], NDArray[Any]],
    queries: F32,
    truth: I64,
    mask: NDArray[np.bool_],
    exact_p50: float,
    **extra: Any,
) -> dict[str, Any]:
    found, ns = timed_queries(search, queries)
    lat = latency_summary(ns)
    violations = sum(int((~mask[f[f >= 0].astype(np.int64)]).sum()) for f in found)
    short = sum(int((f >= 0).sum() < K) for f in found)
    return {
        "index": label,
        "method": method,
        **extra,
        **lat,
        "recall": recall([f[f >= 0] for f in found], truth),
        "p50_vs_exact": lat["p50_us"] / exact_p50,
        "violations": violations,
        "short_results": short,
    }


def post_filter(
    search: Callable[[F32, int], NDArray[Any]], mask: NDArray[np.bool_], fetch: int
) -> Callable[[F32], NDArray[Any]]:
    def run(q: F32) -> NDArray[Any]:
        ids = np.asarray(search(q, fetch), np.int64)
        ids = ids[ids >= 0]
        return ids[mask[ids]][:K]

    return run


def measure_filters(
    indexes: dict[str, tuple[Config, AnnIndex]],
    vectors: Vectors,
    mask: NDArray[np.bool_],
    truth: I64,
    exact_p50: float,
    ef_values: Sequence[int],
    fetches: Sequence[int],
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    allowed_ids = np.flatnonzero(mask).astype(np.int64)
    bits = np.packbits(mask, bitorder="little")
    mask_list: list[bool] = mask.tolist()
    for config, index in indexes.values():
        queries = vectors.queries(config.space)
        label = config.name
        # Over-fetch then filter: works for every library.
        for fetch in fetches:
            index.set_ef(max(fetch, 64))
            out.append(
                filter_points(
                    label,
                    "overfetch",
                    post_filter(index.search, mask, fetch),
                    queries,
                    truth,
                    mask,
                    exact_p50,
                    fetch=fetch,
                    ef_search=max(fetch, 64),
                )
            )
        if isinstance(index, FaissAnn):
            selectors: dict[str, Any] = {
                "faiss_bitmap": faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits)),
                "faiss_batch": faiss.IDSelectorBatch(len(allowed_ids), faiss.swig_ptr(allowed_ids)),
            }
            for method, sel in selectors.items():
                for ef in ef_values:
                    params = faiss.SearchParametersHNSW(sel=sel, efSearch=ef)
                    fa = index

                    def run(q: F32, fa: FaissAnn = fa, params: Any = params) -> NDArray[Any]:
                        return fa.search_params(q, K, params)

                    out.append(
                        filter_points(
                            label, method, run, queries, truth, mask, exact_p50, ef_search=ef
                        )
                    )
        if isinstance(index, HnswlibAnn):
            for ef in ef_values:
                index.set_ef(ef)
                hi = index

                def run_h(q: F32, hi: HnswlibAnn = hi) -> NDArray[Any]:
                    return hi.search_filter(q, K, mask_list.__getitem__)

                out.append(
                    filter_points(
                        label,
                        "hnswlib_python_filter",
                        run_h,
                        queries,
                        truth,
                        mask,
                        exact_p50,
                        ef_search=ef,
                    )
                )
        print(f"  filters measured on {label}", flush=True)
    return out


def filter_index_choice(configs: Sequence[Config]) -> dict[str, Config]:
    """One representative index per library: the largest f32 metric-space (l2/cos) build."""
    chosen: dict[str, Config] = {}
    for c in configs:
        if c.space == "ip" or c.storage != "f32":
            continue
        best = chosen.get(c.library)
        if best is None or (c.m, c.ef_construction) > (best.m, best.ef_construction):
            chosen[c.library] = c
    return chosen


def fitted_items(base: Any, size: int, seed: int = 0) -> tuple[F32, F32]:
    """``size`` items drawn from a Gaussian fitted to the trained ``[v, b]`` rows: the same
    first and second moments as the model, without ``tiled``'s near-duplicate clusters."""
    rows = np.hstack([base.items.item_vectors, base.items.item_biases[:, None]]).astype(np.float64)
    rng = np.random.default_rng(seed)
    drawn = rng.multivariate_normal(rows.mean(0), np.cov(rows, rowvar=False), size, method="eigh")
    drawn = drawn.astype(np.float32)
    return np.ascontiguousarray(drawn[:, :-1]), np.ascontiguousarray(drawn[:, -1])


def run_size(
    size: int,
    base: Any,
    data: str,
    grid_name: str,
    queries: int,
    ef_values: Sequence[int],
    only: str,
) -> SizeResult:
    from serving import tiled  # benchmarks/serving.py

    configs = [c for c in grid(grid_name) if re.search(only, c.name)]
    queries_from = base.user_vectors
    if data == "trained":
        from catalogues import shape_for, trained_model  # benchmarks/catalogues.py

        from shelfrank.core.model_format import load_serving_model

        model, _ = load_serving_model(trained_model(shape_for(size))[1])
        item_vectors, item_biases = model.items.item_vectors, model.items.item_biases
        queries_from = model.user_vectors
        del model
    elif data == "tiled":
        model = tiled(base, size)
        item_vectors, item_biases = model.items.item_vectors, model.items.item_biases
        del model
    else:
        item_vectors, item_biases = fitted_items(base, size)
    vectors = fold(item_vectors, item_biases, queries_from, queries=queries)
    del item_vectors, item_biases
    gc.collect()
    truth = exact_top(vectors.items_ip, vectors.queries_ip, K)
    exact = measure_exact(vectors.items_ip, vectors.queries_ip, truth)
    print(f"size {size:,}: exact numpy p50 {exact['p50_us']:.0f} us", flush=True)
    result = SizeResult(size=size, data=data, grid=grid_name, queries=queries, exact_numpy=exact)
    result.pruned_exact = measure_pruned(vectors.items_ip, vectors.queries_ip, truth)
    print(f"size {size:,}: shelfrank pruned exact {result.pruned_exact}", flush=True)

    rng = np.random.default_rng(7)
    mask = rng.random(size) < FILTER_FRACTION
    filter_truth = exact_top(vectors.items_ip, vectors.queries_ip, K, mask)
    keep = filter_index_choice(configs)
    kept: dict[str, tuple[Config, AnnIndex]] = {}
    for config in configs:
        index, row = measure_config(config, vectors, truth, ef_values, exact["p50_us"])
        result.runs.append(row)
        if keep.get(config.library) == config:
            kept[config.library] = (config, index)
        del index
        gc.collect()
    # Exact filtered baseline: the same numpy path with the mask applied.
    with threadpool_limits(limits=1):
        neg = np.where(mask, np.float32(0), np.float32(-np.inf))

        def exact_filtered(q: F32) -> I64:
            scores = vectors.items_ip @ q + neg
            top = np.argpartition(-scores, K)[:K]
            return top[np.argsort(-scores[top])]

        result.filtered.append(
            filter_points(
                "numpy",
                "exact_masked",
                exact_filtered,
                vectors.queries_ip,
                filter_truth,
                mask,
                exact["p50_us"],
            )
        )
    result.filtered += measure_filters(
        kept, vectors, mask, filter_truth, exact["p50_us"], (64, 256, 1024), (100, 400)
    )
    kept.clear()
    gc.collect()
    return result


# -- output ----------------------------------------------------------------------------------------
def markdown(results: Sequence[SizeResult]) -> str:
    lines: list[str] = []
    for r in results:
        lines.append(
            f"\n### {r.size:,} items ({r.data}): exact numpy p50 {r.exact_numpy['p50_us']:.0f} us, "
            f"p99 {r.exact_numpy['p99_us']:.0f} us ({r.queries} queries, k={K})\n"
        )
        lines.append(
            "| index | build s | index MB | ef | recall@10 | p50 us | p99 us | p50/exact |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for run in r.runs:
            for p in run["points"]:
                lines.append(
                    f"| {run['name']} | {run['build_s']:.1f} | {run['index_bytes'] / 2**20:.0f} "
                    f"| {p['ef_search']} | {p['recall']:.3f} | {p['p50_us']:.0f} "
                    f"| {p['p99_us']:.0f} | {p['p50_vs_exact']:.3f} |"
                )
        lines.append(f"\nFiltered search, {FILTER_FRACTION:.0%} of items allowed:\n")
        lines.append("| index | method | fetch/ef | recall@10 | p50 us | p99 us | short | viol |")
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
        for f in r.filtered:
            knob = f.get("fetch", f.get("ef_search", "-"))
            lines.append(
                f"| {f['index']} | {f['method']} | {knob} | {f['recall']:.3f} "
                f"| {f['p50_us']:.0f} | {f['p99_us']:.0f} | {f['short_results']} "
                f"| {f['violations']} |"
            )
    return "\n".join(lines)


def plot(result: SizeResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    colours = {"usearch": "tab:blue", "faiss": "tab:orange", "hnswlib": "tab:green"}
    styles = ["o-", "s--", "^-.", "v:", "D-", "x--"]
    seen: dict[str, int] = {}
    for run in result.runs:
        n = seen.get(run["library"], 0)
        seen[run["library"]] = n + 1
        xs = [p["p50_us"] for p in run["points"]]
        ys = [p["recall"] for p in run["points"]]
        ax.plot(
            xs,
            ys,
            styles[n % len(styles)],
            color=colours[run["library"]],
            label=run["name"],
            markersize=4,
        )
    ax.axvline(result.exact_numpy["p50_us"], color="grey", linestyle=":", label="exact numpy")
    ax.set_xscale("log")
    ax.set_xlabel("single-query p50 latency, us (1 thread, log)")
    ax.set_ylabel("recall@10")
    ax.set_title(f"MIPS with bias, {result.size:,} items, 65/66 dims, k={K}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="4,000 items (the other smokes' catalogue), few queries",
    )
    parser.add_argument("--only", default="", help="regex on config names to keep")
    parser.add_argument(
        "--grid",
        choices=("auto", "full", "lean"),
        default="auto",
        help="auto: full up to 200,000 items, lean above (1M builds are heavy)",
    )
    parser.add_argument(
        "--data",
        choices=("trained", "tiled", "fitted"),
        default="trained",
        help="trained: the model trained at that size (benchmarks/catalogues.py); tiled: "
        "serving.tiled (near-duplicate clusters); fitted: Gaussian fit of a small model",
    )
    parser.add_argument("--out", default=str(RESULTS / "ann_compare.json"))
    args = parser.parse_args()

    from serving import train_base  # benchmarks/serving.py

    sizes = [4_000] if args.smoke else [int(s) for s in args.sizes.split(",")]
    queries = 100 if args.smoke else QUERIES
    ef_values = (16, 64) if args.smoke else (16, 32, 64, 128, 256, 512, 1024)

    def grid_for(size: int) -> str:
        if args.smoke:
            return "smoke"
        if args.grid != "auto":
            return str(args.grid)
        return "full" if size <= 200_000 else "lean"

    t0 = time.perf_counter()
    _, hybrid = train_base(1682, 943, 100_000, 2)
    base = hybrid.to_serving()
    print(f"trained base model in {time.perf_counter() - t0:.1f}s", flush=True)

    load_before = os.getloadavg()
    results = [
        run_size(size, base, args.data, grid_for(size), queries, ef_values, args.only)
        for size in sizes
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "ann_compare",
                "machine": machine_description(),
                "cpu_count": os.cpu_count(),
                "versions": {
                    "usearch": version("usearch"),
                    "faiss-cpu": version("faiss-cpu"),
                    "hnswlib": version("hnswlib"),
                    "numpy": np.__version__,
                },
                "k": K,
                "build_threads": BUILD_THREADS,
                "search_threads": 1,
                "filter_fraction": FILTER_FRACTION,
                "smoke": args.smoke,
                "data": args.data,
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
                "results": [asdict(r) for r in results],
            },
            indent=1,
        )
    )
    plot(results[-1], out.with_suffix(".png"))
    print(markdown(results))
    print(f"\nwrote {out} and {out.with_suffix('.png')} in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
