"""`cmr-fusion bench <benchmark>`: benchmarks that print the command, the machine and the figures.

Each benchmark is one entry of ``BENCHMARKS`` (name -> help, add_arguments, run); add new ones there.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Callable

from cmr_fusion_ros.cli_options import add_no_progress

HELP = ("benchmarks: `memory` (scene memory vs raw FAISS), `offline` (real-time factor, encoder wrapper vs bare "
        "onnxruntime), `pipeline` (live latency vs the DDS floor)")


def _memory_arguments(p: argparse.ArgumentParser) -> None:
    from cmr_fusion_ros.core.memory.config import BACKENDS as ALL_BACKENDS

    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="database sizes (default: %(default)s)")
    p.add_argument("--dim", type=int, default=256, help="embedding dimension (default: %(default)s)")
    p.add_argument(
        "--backends", nargs="+", default=["exact", "faiss_hnsw", "faiss_ivf"], choices=(*ALL_BACKENDS, "postgres"),
        help="backends to measure; postgres = PostgreSQL + pgvector HNSW through PostgresMemory, on an embedded "
             "server in a temporary folder unless --pg-uri (default: %(default)s)",
    )
    p.add_argument("--pg-uri", default="", help="postgres: an existing server with pgvector (its cmr_entries table "
                                                "is dropped and rebuilt!)")
    p.add_argument("--pg-m", type=int, default=16, help="postgres: HNSW m (default: %(default)s)")
    p.add_argument("--pg-ef-construction", type=int, default=64, help="postgres: HNSW ef_construction "
                                                                      "(default: %(default)s)")
    p.add_argument("--pg-ef-search", type=int, default=64, help="postgres: hnsw.ef_search (default: %(default)s)")
    p.add_argument("--pg-insert-rate", type=float, default=1200.0,
                   help="postgres: entries/s a writer offers while queries are timed (default: %(default)s, above the "
                        "1000/s target, so a server that keeps up shows it)")
    p.add_argument("--pg-insert-seconds", type=float, default=10.0, help="postgres: how long (default: %(default)s)")
    p.add_argument("--queries", type=int, default=1000, help="single queries timed per backend (default: %(default)s)")
    p.add_argument("--k", type=int, default=10, help="neighbours per query (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic embeddings (default: %(default)s)")
    p.add_argument("--single-adds", type=int, default=500, help="single-entry adds timed (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="write every figure to this JSON file")
    p.add_argument("--plot", metavar="FILE.png", help="write a plot of query latency and recall against size")
    add_no_progress(p)


def _run_memory(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cmr_fusion_ros.core.memory.postgres import check_hnsw_params
    from cmr_fusion_ros.eval import bench_memory as bm

    if "postgres" in args.backends:  # pgvector's rule, before minutes of loading
        check_hnsw_params(args.pg_m, args.pg_ef_construction, "--pg-m", "--pg-ef-construction")

    command = "cmr-fusion bench memory " + " ".join(
        shlex.quote(str(a))
        for a in [
            "--sizes", *args.sizes, "--dim", args.dim, "--backends", *args.backends, "--queries", args.queries,
            "--k", args.k, "--seed", args.seed, "--single-adds", args.single_adds,
            *(["--json", args.json] if args.json else []), *(["--plot", args.plot] if args.plot else []),
            *(["--pg-m", args.pg_m, "--pg-ef-construction", args.pg_ef_construction, "--pg-ef-search",
               args.pg_ef_search, "--pg-insert-rate", args.pg_insert_rate, "--pg-insert-seconds",
               args.pg_insert_seconds] if "postgres" in args.backends else []),
        ]
    )
    machine = bm.machine_info()
    print(f"command: {command}")
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM, "
        f"load average at start {tuple(round(x, 2) for x in machine['loadavg_at_start'])}; python {machine['python']}, "
        f"numpy {machine['numpy']}, faiss {machine['faiss']} ({machine['faiss_omp_threads']} OpenMP threads)"
    )
    print(f"data: {bm.DataSpec().describe(max(args.sizes))}")
    print(f"dim {args.dim}, k {args.k}, {args.queries} single queries per backend (fewer for exact at large sizes), "
          f"wrapper = SceneMemory.search/add_batch/add, raw = bare FAISS index with the same parameters and data")
    pg_rows = _run_postgres(args) if "postgres" in args.backends else []
    args.backends = [b for b in args.backends if b != "postgres"]
    if not args.backends:
        _write_json(args, command, machine, {}, [], pg_rows)
        return 0
    steps = len(args.sizes) * len(args.backends)
    bar = tqdm(total=steps, desc="bench memory", file=sys.stderr, leave=False, disable=args.no_progress)
    def on_row(row) -> None:  # each row as soon as it is measured, so a long run shows its figures early
        tqdm.write(bm.format_table([row], header=not on_row.done), file=sys.stdout)
        on_row.done = True
        bar.update(1)

    on_row.done = False
    rows, info = bm.run_benchmark(
        args.sizes, dim=args.dim, backends=args.backends, n_queries=args.queries, k=args.k, seed=args.seed,
        n_single_adds=args.single_adds, progress=bar.set_description, on_row=on_row,
    )
    bar.close()
    print("summary:")
    print(bm.format_table(rows))
    print("columns: insert/s = bulk add_batch in chunks of 10000 (IVF training included); add1 = one add() into the "
          "full index; q = one query with k neighbours: w = SceneMemory.search (entries built and read), ids = "
          "SceneMemory.search_ids, raw = bare FAISS index.search; ratio = wrapper QPS / raw QPS; R@1 = top-1 score "
          "equals the exact top-1 score")
    for r in rows:
        if r.backend in ("faiss_hnsw", "faiss_ivf"):
            lat = r.query_ms["wrapper"]["p50"]
            rec = r.recall_at_1["wrapper"]
            ok = lat <= 0.5 and rec >= 0.98
            print(
                f"target n={r.size} {r.backend} {r.params}: query p50 {lat:.3f} ms <= 0.5 and recall@1 {rec:.3f} "
                f">= 0.98: {'MET' if ok else 'NOT MET'}; wrapper/raw throughput >= 0.90: search "
                f"{r.throughput_ratio:.2f} {'MET' if r.throughput_ratio >= 0.9 else 'NOT MET'}, search_ids "
                f"{r.throughput_ratio_ids:.2f} {'MET' if r.throughput_ratio_ids >= 0.9 else 'NOT MET'}"
            )
    _write_json(args, command, machine, info, rows, pg_rows)
    if args.plot:
        _plot(rows, args.plot, command)
        print(f"wrote {args.plot}")
    return 0


def _write_json(args, command, machine, info, rows, pg_rows) -> None:
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": command, "machine": machine, "info": info, "rows": [r.to_dict() for r in rows],
                       "postgres_rows": [r.to_dict() for r in pg_rows]}, f, indent=2)
        print(f"wrote {args.json}")


def _run_postgres(args: argparse.Namespace) -> list:
    """The postgres rows (PostgreSQL + pgvector through PostgresMemory), printed as they are measured."""
    from cmr_fusion_ros.eval import bench_pg

    printed = []

    def on_row(row) -> None:
        print(bench_pg.format_pg_table([row], header=not printed), flush=True)
        printed.append(row)

    rows = bench_pg.run_pg_benchmark(
        args.sizes, dim=args.dim, n_queries=min(args.queries, 1000), k=args.k, seed=args.seed, m=args.pg_m,
        ef_construction=args.pg_ef_construction, ef_search=args.pg_ef_search, insert_rate=args.pg_insert_rate,
        insert_seconds=args.pg_insert_seconds, uri=args.pg_uri,
        progress=lambda s: print(f"[bench] {s}", file=sys.stderr, flush=True), on_row=on_row)
    print("postgres columns: load/s = entries/s of the bulk load (PostgresMemory.add_batch: binary COPY batches of "
          "5000, no index); build s = CREATE INDEX ... USING hnsw (vector_ip_ops) after the load; q = "
          "PostgresMemory.search, k neighbours, filtered to one of 3 modalities, over the local socket (ms); R@1 = "
          "top-1 score equals the exact filtered top-1; ins/s = 5000 entries added to the indexed table, per second "
          "until acknowledged; ins/s@load and q p99@load = a writer adding --pg-insert-rate entries/s while queries "
          "run back to back; MiB = table (with TOAST) and index size")
    for r in rows:
        ok = r.query_ms["p99"] <= 10 and r.recall_at_1 >= 0.95 and r.loaded_insert_per_s >= 1000 \
            and r.loaded_query_ms["p99"] <= 10
        offered = "" if args.pg_insert_rate > 1000 else \
            f" (the writer offered {args.pg_insert_rate:g}/s: offer more than 1000/s to show the target)"
        print(f"target n={r.size} postgres: query p99 {r.query_ms['p99']:.2f} ms (under load "
              f"{r.loaded_query_ms['p99']:.2f}) <= 10, recall@1 {r.recall_at_1:.3f} >= 0.95, inserts sustained "
              f"{r.loaded_insert_per_s:.0f}/s >= 1000: {'MET' if ok else 'NOT MET'} at this size{offered}")
    return rows


def _plot(rows, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for backend in dict.fromkeys(r.backend for r in rows):
        rs = [r for r in rows if r.backend == backend]
        sizes = [r.size for r in rs]
        (line,) = ax1.plot(sizes, [r.query_ms["wrapper"]["p50"] for r in rs], "o-", label=f"{backend} search")
        ax1.plot(sizes, [r.query_ms["wrapper_ids"]["p50"] for r in rs], "s:", color=line.get_color(),
                 label=f"{backend} search_ids")
        ax1.plot(sizes, [r.query_ms["raw"]["p50"] for r in rs], "x--", color=line.get_color(), label=f"{backend} raw")
        ax2.plot(sizes, [r.recall_at_1["wrapper"] for r in rs], "o-", color=line.get_color(), label=backend)
    ax1.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax1.set(xscale="log", yscale="log", xlabel="entries", ylabel="query p50 (ms)", title="single-query latency")
    ax2.axhline(0.98, color="grey", lw=0.8, ls=":")
    ax2.set(xscale="log", xlabel="entries", ylabel="recall@1 vs exact", title="recall@1", ylim=(0.8, 1.005))
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _lazy(module: str, attr: str) -> Callable:
    """A function of ``module`` imported only when called (benchmarks: cmr_fusion_ros.eval; runs of ROS nodes:
    cmr_fusion_ros.ros)."""
    def call(*args):
        import importlib

        return getattr(importlib.import_module(module), attr)(*args)

    return call


# name -> (help, add_arguments, run)
BENCHMARKS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "memory": (
        "scene memory: insert and query latency/throughput and recall@1 of exact, HNSW and IVF vs raw FAISS",
        _memory_arguments,
        _run_memory,
    ),
    "offline": (
        "offline real-time factor of `process` on a bag; encoder wrapper vs bare onnxruntime (ratio)",
        _lazy("cmr_fusion_ros.eval.bench_offline", "add_arguments"),
        _lazy("cmr_fusion_ros.eval.bench_offline", "run"),
    ),
    "pipeline": (
        "live graph latency per stream (e2e, stages, drops, CPU) against a plain rclpy relay (DDS floor), same run",
        _lazy("cmr_fusion_ros.eval.bench_pipeline", "add_arguments"),
        _lazy("cmr_fusion_ros.ros.bench_pipeline", "run"),
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = HELP + "\n\nEach prints its command, the machine and the load average:\n" + "\n".join(
        f"  {name:<9} {help_}" for name, (help_, _, _) in BENCHMARKS.items()) + \
        "\n`cmr-fusion bench BENCHMARK --help` lists each one's options."
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, (help_, add, _) in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add(p)
        p.set_defaults(_benchmark=name)


def run(args: argparse.Namespace) -> int:
    return BENCHMARKS[args._benchmark][2](args)
