"""`make bench`: start a private Kafka + Cassandra, run the benchmarks, write bench/results/.

    python -m bench.run [--quick]
                        [--only ingest,store,long,overload,users,pool,fresh,routing,catalog]
                        [--name NAME]

``routing`` needs no Kafka or Cassandra (``--only routing`` starts none): its own stand-ins only.

Nothing here asserts on time: every number is measured and reported (ratios are taken side by
side in the same run), and SUMMARY.md says which targets were met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import traceback

from .common import RESULTS_DIR, infra, machine_info, say, start_standin
from .report import write_plots, write_summary

PHASES = ("ingest", "store", "long", "overload", "users", "pool", "fresh", "routing", "catalog")

SIZES = {
    "quick": {"ingest_events": 5000, "store_users": 32, "store_versions": 5, "store_rounds": 2,
              "long_users": 5000, "long_trickle_s": 10, "long_rate": 200,
              "overload_s": 20, "overload_warm_s": 5, "users": 50_000,
              "pool_users": 1000, "pool_per_user": 10, "pool_rate": 150, "pool_s": 30,
              "pool_warm_s": 10, "fresh_s": 12,
              "routing_requests": 200, "routing_callers": 6, "routing_rounds": 2,
              "affinity_users": 8, "affinity_repeats": 5,
              "catalog_view_items": 20_000, "catalog_lookups": 200_000,
              "catalog_cassandra_reads": 2000, "catalog_memory_items": 20_000,
              "catalog_windows": 500, "importer_users": 500},
    "full": {"ingest_events": 100_000, "store_users": 32, "store_versions": 40, "store_rounds": 8,
             "long_users": 100_000, "long_trickle_s": 30, "long_rate": 400,
             "overload_s": 40, "overload_warm_s": 10, "users": 1_000_000,
             "pool_users": 4000, "pool_per_user": 12, "pool_rate": 300, "pool_s": 90,
             "pool_warm_s": 20, "fresh_s": 40,
             "routing_requests": 480, "routing_callers": 6, "routing_rounds": 2,
             "affinity_users": 12, "affinity_repeats": 5,
             "catalog_view_items": 100_000, "catalog_lookups": 1_000_000,
             "catalog_cassandra_reads": 5000, "catalog_memory_items": 100_000,
             "catalog_windows": 2000, "importer_users": 5000},
}


async def run(args: argparse.Namespace) -> dict:
    size = SIZES["quick" if args.quick else "full"]
    only = set(args.only.split(",")) if args.only else set(PHASES)
    results: dict = {"name": args.name, "mode": "quick" if args.quick else "full",
                     "machine": machine_info(), "sizes": size, "benchmarks": {}, "errors": {}}
    t_start = time.monotonic()
    needs_infra = bool(only & {"ingest", "store", "long", "overload", "pool", "fresh",
                               "catalog"})
    standins = []
    try:
        if needs_infra:
            say("phase 0: starting private Kafka + Cassandra (deploy/local/infra.py up, run/bench)")
            for attempt in range(3):  # a just-stopped server may still hold its ports briefly
                try:
                    results["infra_up_s"] = round(infra("up"), 1)
                    break
                except RuntimeError as exc:
                    if attempt == 2:
                        raise
                    say(f"infra up failed ({str(exc).strip().splitlines()[-1][:200]}); "
                        "retrying in 15 s")
                    await asyncio.to_thread(infra, "down")
                    await asyncio.sleep(15)
            say(f"infra up in {results['infra_up_s']}s")
        if only & {"ingest", "long", "overload", "pool", "fresh"}:
            from .pool_fresh import N_STANDINS, STANDIN

            for i in range(N_STANDINS):
                standins.append(start_standin(f"standin-{i}", seed=i, **STANDIN))
        urls = [u for _, u in standins]

        async def phase(name: str, coro_fn):
            if name not in only:
                return None
            say(f"=== {name} ===")
            t0 = time.monotonic()
            try:
                res = await coro_fn()
                res["phase_s"] = round(time.monotonic() - t0, 1)
                results["benchmarks"][name] = res
                return res
            except Exception as exc:  # keep going: report what could be measured
                say(f"{name} FAILED: {exc!r}")
                results["errors"][name] = traceback.format_exc()
                return None

        from .catalog import bench_catalog
        from .durable import bench_ingest, bench_long_windows, bench_overload, bench_pending_users
        from .pool_fresh import STANDIN, bench_freshness, bench_pool
        from .routing import bench_routing
        from .stream_store import bench_store

        await phase("ingest", lambda: bench_ingest(size["ingest_events"], urls[0]))
        await phase("store", lambda: bench_store(size["store_users"], size["store_versions"],
                                                 size["store_rounds"]))
        await phase("long", lambda: bench_long_windows(size["long_users"], size["long_trickle_s"],
                                                       size["long_rate"], urls[0]))
        await phase("overload", lambda: bench_overload(
            urls[0], slots=STANDIN["max_concurrency"], levels=(0.5, 1.0, 3.0),
            duration_s=size["overload_s"], warmup_s=size["overload_warm_s"]))
        pool = await phase("pool", lambda: bench_pool(
            urls, n_users=size["pool_users"], per_user=size["pool_per_user"],
            rate=size["pool_rate"], duration_s=size["pool_s"], warmup_s=size["pool_warm_s"]))
        if pool:
            capacity, service = pool["capacity_updates_per_s"], pool["mean_service_time_s"]
        else:  # no measurement: fall back to the latency model with a typical reply length
            from .pool_fresh import STANDIN as S

            service = (S["ttft_ms"] + S["per_token_ms"] * 200) / 1000
            capacity = len(urls) * S["max_concurrency"] / service
        await phase("fresh", lambda: bench_freshness(urls, capacity=capacity, service_s=service,
                                                     levels=(0.5, 0.9),
                                                     duration_s=size["fresh_s"]))
        # stand-ins are no longer needed; stop them before the CPU-bound in-process run
        for proc, _ in standins:
            proc.stop()
        await phase("routing", lambda: bench_routing(
            requests=size["routing_requests"], callers=size["routing_callers"],
            rounds=size["routing_rounds"], affinity_users=size["affinity_users"],
            affinity_repeats=size["affinity_repeats"]))
        await phase("users", lambda: bench_pending_users(size["users"]))
        await phase("catalog", lambda: bench_catalog(
            size["catalog_view_items"], size["catalog_lookups"], size["catalog_cassandra_reads"],
            size["catalog_memory_items"], size["catalog_windows"], size["importer_users"]))
    finally:
        for proc, _ in standins:
            proc.stop()
        if needs_infra:
            say("stopping private Kafka + Cassandra (infra.py down)")
            try:
                infra("down")
            except Exception as exc:
                say(f"infra down failed: {exc}")
                results["errors"]["infra_down"] = str(exc)
    results["total_s"] = round(time.monotonic() - t_start, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (development)")
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(PHASES)}")
    ap.add_argument("--name", help="result file name (default: quick / full)")
    args = ap.parse_args(argv)
    args.name = args.name or ("quick" if args.quick else "full")
    try:
        results = asyncio.run(run(args))
    except Exception:
        say("benchmark aborted:\n" + traceback.format_exc())
        results = {"name": args.name, "mode": "quick" if args.quick else "full",
                   "machine": machine_info(), "benchmarks": {},
                   "errors": {"run": traceback.format_exc()}}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{args.name}.json"
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    plots = write_plots(results, RESULTS_DIR)
    summary = write_summary(results, RESULTS_DIR, plots)
    say(f"wrote {path}, {summary}" + (f", {len(plots)} plots" if plots else ", no plots"))
    print(summary.read_text())
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
