"""SUMMARY.md and PNG plots from one results dict."""

from __future__ import annotations

from pathlib import Path


def _f(x, nd=3):
    return "n/a" if x is None else f"{x:.{nd}f}"


def _ok(b):
    return "met" if b else "**not met**"


def write_summary(r: dict, out: Path, plots: list[Path]) -> Path:
    m = r["machine"]
    b = r["benchmarks"]
    lines = [
        f"# prefstream benchmark: `{r['name']}` ({r['mode']})",
        "",
        f"{m['timestamp']} · {m['nproc']} CPUs ({m.get('cpu_model')}) · {m['memory_total_mb']} MB · "
        f"Python {m['python']} · total {r.get('total_s')}s"
        + (f" (infra up {r['infra_up_s']}s). Kafka 3.9 + Cassandra 5.0 single node on 127.0.0.1 "
           "(private ports, run/bench), sharing the CPUs with the worker, the stand-ins and the "
           "load generator." if r.get("infra_up_s") is not None else
           ". No Kafka or Cassandra in this run: stand-ins and load generators on 127.0.0.1 only.")
        + " Ratios are side by side in the same run; nothing is asserted on time.",
        "",
        "| # | measurement | result | target | |",
        "|---|---|---|---|---|",
    ]
    if s := b.get("ingest"):
        lines.append(f"| a | ingest into durable windows: worker / bare buffered baseline ev/s | "
                     f"{_f(s['ratio'])} ({s['worker_events_per_s']:.0f} / "
                     f"{s['bare_buffered_events_per_s']:.0f}) | >= 0.7 | {_ok(s['meets_target'])} |")
        lines.append(f"| a2 | worker / bare aiokafka consumer | {_f(s['ratio_vs_bare_consumer'])} "
                     f"({s['worker_events_per_s']:.0f} / {s['bare_consumer_events_per_s']:.0f}) | "
                     "(info) | |")
    if s := b.get("store"):
        med = s["median_versions_per_s"]
        per = s.get("ratio_vs_bare_lwt_per_round") or [s["ratio_vs_bare_lwt"]]
        lines.append(f"| b | version write: `append` / bare `INSERT … IF NOT EXISTS` (median of "
                     f"{len(per)} paired rounds, range {min(per):.3f}–{max(per):.3f}) | "
                     f"{_f(s['ratio_vs_bare_lwt'])} (medians {med['append']:.0f} / "
                     f"{med['bare_lwt_insert']:.0f}) | >= 0.8 | {_ok(s['meets_target'])} |")
        lines.append(f"| b2 | `append` / bare INSERT | {_f(s['ratio'])} "
                     f"({med['append']:.0f} / {med['bare_insert']:.0f}) | (info) | |")
    if s := b.get("long"):
        lag = s["committed_lag_s"]
        k = dict(s["sigkill"])
        k.setdefault("records_reread_after_restart", k.get("consumed_but_uncommitted_at_kill"))
        k.setdefault("pending_users_before_kill", k.get("pending_users_after_restart"))
        mid = "records_reread_after_restart" in s["sigkill"]  # killed while events flowed
        restart = s.get("restart_lag_s")
        during = (" (age of the oldest uncommitted record, outside the restart)" if restart
                  else " (incl. the SIGKILL + restart)" if mid else "")
        lines.append(f"| c | {s['users']} users, MAX_AGE_S=900: committed-offset lag max / median"
                     f"{during} | "
                     f"{_f(lag['max'], 2)} / {_f(lag['median'], 2)} s | <= commit interval + 1 s "
                     f"= {s['target_lag_s']} s | {_ok(s['meets_target'])} |")
        if restart:
            prev = s["committed_lag_s_previous_definition"]
            during_restart = (f"{_f(restart['max'], 2)} s" if restart["samples"] else
                              "not sampled (producer and sampler wait for the restart, c3)")
            lines.append(f"| c1 | lag max during the SIGKILL restart; previous lag definition "
                         f"(whole 0.5 s steps, incl. the restart) max / median | "
                         f"{during_restart}; {_f(prev['max'], 2)} / "
                         f"{_f(prev['median'], 2)} s | (info) | |")
        lines.append(f"| c2 | worker RSS max; model calls per event during the run | "
                     f"{s['worker_rss_kb_max'] / 1024:.0f} MB; {_f(s['model_calls_per_event'])} | "
                     "(info) | |")
        rate = s.get("trickle_events_per_s")
        interval = f" (one commit interval = {rate:.0f} records)" if rate else ""
        when = "mid-trickle" if mid else "after the trickle"
        lines.append(f"| c3 | SIGKILL {when}: records re-read after the restart; pending "
                     f"windows rebuilt after | {k.get('records_reread_after_restart')}"
                     f"{interval}; "
                     f"{k.get('pending_users_before_kill')} windows in "
                     f"{k.get('restart_to_pending_windows_rebuilt_s')} s | <= one commit "
                     "interval of input | |")
    if s := b.get("overload"):
        cells = ", ".join(f"{lv}x: util {_f(v['utilisation'], 2)}, calls/event "
                          f"{_f(v['calls_per_event'])}, lost {v['lost']}"
                          for lv, v in s["levels"].items())
        lines.append(f"| d | overload (pool utilisation; calls per event; lost) | {cells} | "
                     f"util >= 0.95 at 3x, calls/event falling, none lost | "
                     f"{_ok(s['meets_target'])} |")
    if s := b.get("users"):
        lines.append(f"| e | {s['users']} users with one pending event: memory per pending user | "
                     f"{s['bytes_per_pending_user']:.0f} B | (info) | |")
    if s := b.get("pool"):
        lines.append(f"| 3 | pool efficiency: updates/s / capacity | {_f(s['efficiency'])} "
                     f"({s['achieved_updates_per_s']:.2f} / {s['capacity_updates_per_s']:.2f}) | "
                     f">= 0.9 | {_ok(s['efficiency'] >= 0.9)} |")
        cpe, tgt = s["calls_per_event"], s["calls_per_event_target"]
        lines.append(f"| 3b | model calls per event (one-call-per-event = 1.0) | {_f(cpe)} | "
                     f"<= 1/mean window = {_f(tgt)} (mean window {_f(s['mean_window_events'], 2)}) "
                     f"| {_ok(s['calls_per_event_met'])} (calls {s['calls_ok']} vs versions "
                     f"{s['versions']}, ±{s['calls_per_event_tolerance_calls']} calls straddling "
                     "the interval ends) |")
    if s := b.get("fresh"):
        for lv in s["levels"]:
            tgt = f"p99 <= {_f(s['target_p99_at_50pct_s'], 2)} s" if abs(lv["level"] - .5) < 1e-9 \
                else "(info)"
            ok = _ok(s["meets_target"]) if abs(lv["level"] - .5) < 1e-9 else ""
            lines.append(
                f"| 4 | freshness at {lv['level']:.0%} of capacity (measured utilization "
                f"{lv['measured_utilization']:.2f}): p50 / p95 / p99 | {_f(lv['p50_s'], 2)} / "
                f"{_f(lv['p95_s'], 2)} / {_f(lv['p99_s'], 2)} s ({lv['applied']}/{lv['events']} "
                f"events) | {tgt} | {ok} |")
    if s := b.get("routing"):
        ld, od, aff = s["modes"]["load"], s["modes"]["outstanding"], s["affinity"]
        lines.append(
            f"| r | routing on the servers' queues (`routing=load`) / least-outstanding, unequal "
            f"pool whose slow server other clients share: throughput ratio; p95 ratio | "
            f"{_f(s['throughput_ratio_load_over_outstanding'])} ({ld['requests_per_s']:.1f} / "
            f"{od['requests_per_s']:.1f} req/s); {_f(s['p95_ratio_load_over_outstanding'])} "
            f"({_f(ld['p95_s'])} / {_f(od['p95_s'])} s) | (info) | |")
        split = " / ".join(s["modes"]["load"]["split"])
        lines.append(f"| r2 | requests on {split}: load; outstanding | "
                     f"{' / '.join(str(v) for v in ld['split'].values())}; "
                     f"{' / '.join(str(v) for v in od['split'].values())} | (info) | |")
        u, n = aff["user"], aff["none"]
        lines.append(f"| r3 | `affinity=user`: a user's repeated requests on the endpoint of its "
                     f"first | {_f(u['same_endpoint_as_first_fraction'])} vs "
                     f"{_f(n['same_endpoint_as_first_fraction'])} without (1/n = "
                     f"{_f(aff['uniform_chance'], 2)}; chance given that split "
                     f"{_f(n['chance_same_given_split'])}) | ~1.0 vs ~1/n | |")
    if s := b.get("catalog"):
        v, lk, cs, m, e = (s["view_load"], s["lookups"], s["cassandra_point_reads"], s["memory"],
                           s["enrichment"])
        lines.append(
            f"| c | catalog view load from Kafka / bare aiokafka + `json.loads` | "
            f"{_f(v['ratio_view_vs_bare'])} ({v['view_records_per_s']:,.0f} / "
            f"{v['bare_consumer_records_per_s']:,.0f} records/s) | (info) | |")
        lines.append(
            f"| c2 | catalog lookups/s: in-memory view; dict; Cassandra point read | "
            f"{lk['view_lookups_per_s']:,.0f}; {lk['dict_lookups_per_s']:,.0f}; "
            f"{cs['sequential_reads_per_s']:,.0f} (view / Cassandra = "
            f"{s['ratio_memory_lookup_vs_cassandra_read']:,.0f}) | (info) | |")
        lines.append(
            f"| c3 | catalog memory per item (record {m['record_bytes']} B); enrichment per "
            f"{e['events_per_window']}-event window ({e['lookups_per_window']:.0f} lookups) | "
            f"{m['bytes_per_item']:,} B; {_f(e['enrichment_us_per_window'], 1)} µs | (info) | |")
        imp = "; ".join(f"{k} {r['events_per_s']:,.0f}" for k, r in s["importers"].items())
        lines.append(f"| c4 | importers, events/s | {imp} | (info) | |")
    lines.append("")
    if s := b.get("ingest"):
        lines += ["## a. Ingest into durable windows", "",
                  f"{s['events']} pre-produced events of {s['users']} users, 4 partitions. The "
                  "worker runs with windows that never close (no model call), so it measures "
                  "consume → decode/validate → durable buffer write (Cassandra) → commit; its "
                  "rate is `/stats` `buffered` sampled every 0.1 s. The bare buffered baseline is "
                  "aiokafka `getmany` + the same decode + the same `CassandraPendingBuffer.add` "
                  f"per batch of {s['intake_batch']}, pipelined as the worker's intake is (one "
                  "write in flight, batches decoded meanwhile merged into the next write) + a "
                  "commit per second of the buffered positions, without faust (run "
                  "before and after the worker; mean used).", ""]
    if s := b.get("store"):
        med = s["median_versions_per_s"]
        lines += ["## 2. Store overhead", "",
                  f"{s['users_in_parallel']} users in parallel, {s['versions_per_user']} versions "
                  f"each, {s['rounds']} round(s) alternating the variants (ABC, then CBA; per-round "
                  "ratio append / bare LWT, median shown); same row "
                  f"shape ({s['event_ids_per_version']} event ids, ~600-char summary).",
                  f"`append` round trips: {s['append_round_trips']}.", ""]
    if s := b.get("pool"):
        lines += ["## 3. Pool efficiency", "",
                  f"{s['servers']} stand-ins × {s['standin']['max_concurrency']} slots, "
                  f"latency {s['standin']['ttft_ms']:.0f} ms + {s['standin']['per_token_ms']} ms × "
                  f"completion tokens (mean {_f(s['mean_completion_tokens'], 0)} tokens → mean "
                  f"service {_f(s['mean_service_time_s'])} s from `/admin/stats`); capacity = "
                  f"slots / service = {_f(s['capacity_updates_per_s'], 2)} updates/s. Offered "
                  f"{s['offered_events_per_s']} events/s from {s['users']} Zipf users in bursts "
                  f"{s['burst_pattern']} (×rate per second) for {s['duration_s']} s, measured after "
                  f"{s['warmup_s']} s warm-up over {s['measured_interval_s']} s: {s['versions']} "
                  f"versions, {s['calls_ok']} model calls, {s['calls_rejected_429']} 429s, "
                  f"{s['events_applied']} events applied; {s['versions'] - s['model_versions']} "
                  "versions were carried forward without a call (windows of unpaired dislikes) "
                  "and are not counted as pool throughput (all versions: "
                  f"{s['versions_per_s_all']:.2f}/s); stand-in busy fraction (calls × service / "
                  f"slots × time) {_f(s['standin_busy_fraction'])}, which can exceed 1 by the "
                  f"≤ {s['slots']} calls straddling the interval ends. Window: {s['window']}. "
                  "Calls per event are over the measured interval. Whole run (after a graceful "
                  f"stop): {s['whole_run']}.", ""]
    if s := b.get("fresh"):
        lines += ["## 4. Freshness", "",
                  f"Latency from handing an event to the producer to receiving the first "
                  f"`SummaryChanged` that lists it. Paced producer ({s['pacing']}), rate = level × "
                  f"capacity {_f(s['capacity_updates_per_s'], 2)}/s. Window {s['window']}; single "
                  f"call latency {_f(s['single_call_latency_s'])} s; target p99 at 50% = max age + "
                  f"3 calls = {_f(s['target_p99_at_50pct_s'], 2)} s.", ""]
    if s := b.get("long"):
        lines += ["## c. Long windows", "",
                  f"{s['users']} users each send one event, then a trickle; windows are 15 "
                  f"minutes on the real clock ({s['clock']}). Lag = the age of the oldest record "
                  "produced but not yet committed (0 when all are), sampled every 0.5 s; samples "
                  "from the SIGKILL until the restarted member commits are reported apart. Then the "
                  f"worker is SIGKILLed and restarted with the same static member id: {s['sigkill']}.",
                  ""]
    if s := b.get("overload"):
        lines += ["## d. Overload", "",
                  f"One stand-in with {s['slots']} slots; the worker's model budget is exactly "
                  "those slots. Offered events/s = level × pool capacity in calls/s (so at 1x one "
                  "call per event would just fit). Utilisation = stand-in slot-seconds busy / "
                  "(slots × time) after warm-up; calls per event over the whole level; lost = "
                  "produced events never announced after a drain.", ""]
    if s := b.get("users"):
        lines += ["## e. One million pending users", "", s["what"] + ".", ""]
    if s := b.get("routing"):
        f, sl = s["standins"]["fast"], s["standins"]["slow"]
        ld, od, aff = s["modes"]["load"], s["modes"]["outstanding"], s["affinity"]
        lines += [
            "## r. Load-aware routing", "",
            f"Two stand-ins: fast {f['max_concurrency']} slots, {f['ttft_ms']:.0f} ms + "
            f"{f['per_token_ms']} ms/token; slow {sl['max_concurrency']} slots, "
            f"{sl['ttft_ms']:.0f} ms + {sl['per_token_ms']} ms/token (± jitter, seeded). "
            f"{s['background']['clients']} background clients ({s['background']['kind']}) keep "
            f"the slow one's queue non-empty. The same {s['requests']} seeded update requests "
            f"from {s['callers']} concurrent callers go through `OpenAICompatSummaryModel` "
            f"(load_interval_s {s['client']['load_interval_s']}, max_concurrency_per_endpoint "
            f"{s['client']['max_concurrency_per_endpoint']}) with each routing, same stand-ins "
            f"and background, in {s['rounds']} round(s) ({s['order']}); each client warms up "
            f"on {2 * s['callers']} requests first.", "",
            "| routing | req/s | p50 s | p95 s | p99 s | split | slow server: mean running / "
            "waiting (all clients) | background req/s |", "|---|---|---|---|---|---|---|---|"]
        for m, x in (("load", ld), ("outstanding", od)):
            q = x["slow_queue_all_clients"]
            lines.append(f"| {m} | {x['requests_per_s']:.1f} | {_f(x['p50_s'])} | "
                         f"{_f(x['p95_s'])} | {_f(x['p99_s'])} | "
                         f"{', '.join(f'{k} {v}' for k, v in x['split'].items())} | "
                         f"{_f(q.get('mean_running'), 2)} / {_f(q.get('mean_waiting'), 2)} | "
                         f"{_f(x['background_requests_per_s'], 2)} |")
        lines += ["", f"Affinity: {aff['users']} users × {aff['repeats_per_user']} requests "
                  f"(interleaved), {aff['callers']} callers, routing={aff['routing']}, background "
                  f"{aff['background']}; fraction of each user's later requests served where its "
                  f"first one was: affinity=user {_f(aff['user']['same_endpoint_as_first_fraction'])}"
                  f" (split {aff['user']['split']}), none "
                  f"{_f(aff['none']['same_endpoint_as_first_fraction'])} (split "
                  f"{aff['none']['split']}).", ""]
    if s := b.get("scale"):
        lines += ["## 5. Scale", "", s["what"] + ".", "",
                  "| tracked users | µs/update (populate) | µs/update (steady) | tick ms (all pending) "
                  "| B / idle user | B / user with 1 pending event |", "|---|---|---|---|---|---|"]
        for row in s["rows"]:
            lines.append(f"| {row['tracked_users']} | {row['populate_us_per_update']:.1f} | "
                         f"{row['steady_us_per_update']:.1f} | "
                         f"{row['tick_ms_with_all_users_pending']:.2f} | "
                         f"{row['bytes_per_idle_user']:.0f} | "
                         f"{row['bytes_per_pending_user_1_event']:.0f} |")
        lines.append("")
    if r["errors"]:
        lines += ["## Errors", ""] + [f"- {k}: `{v.strip().splitlines()[-1]}`"
                                      for k, v in r["errors"].items()] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    else:
        lines += ["(no plots: matplotlib not installed — `pip install -e '.[bench]'`)", ""]
    path = out / ("SUMMARY.md" if r["name"] == "full" else f"SUMMARY-{r['name']}.md")
    path.write_text("\n".join(lines))
    return path


def write_plots(r: dict, out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    b, made = r["benchmarks"], []
    name = r["name"]
    if (s := b.get("pool")) and s.get("timeline"):
        tl = s["timeline"]
        t = [x["t"] for x in tl]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(t, [x["versions"] for x in tl], label="versions stored")
        ax.plot(t, [x["calls_ok"] for x in tl], label="model calls", linestyle="--")
        cap = s["capacity_updates_per_s"]
        ax.plot(t, [cap * x for x in t], label=f"capacity {cap:.1f}/s", linestyle=":")
        ax.set_xlabel("s")
        ax.set_ylabel("cumulative")
        ax.set_title(f"pool under overload: efficiency {s['efficiency']:.2f}")
        ax.legend()
        p = out / f"{name}-pool.png"
        fig.savefig(p, dpi=100, bbox_inches="tight")
        plt.close(fig)
        made.append(p)
    if s := b.get("fresh"):
        fig, ax = plt.subplots(figsize=(7, 4))
        for lv in s["levels"]:
            xs = sorted(lv["latencies_s"])
            if xs:
                ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))],
                        label=f"{lv['level']:.0%} load (p99 {lv['p99_s']:.2f}s)")
        ax.axvline(s["target_p99_at_50pct_s"], color="grey", linestyle=":", label="p99 target @50%")
        ax.set_xlabel("event → change event latency (s)")
        ax.set_ylabel("CDF")
        ax.legend()
        p = out / f"{name}-freshness.png"
        fig.savefig(p, dpi=100, bbox_inches="tight")
        plt.close(fig)
        made.append(p)
    if s := b.get("scale"):
        rows = s["rows"]
        n = [x["tracked_users"] for x in rows]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        a1.plot(n, [x["steady_us_per_update"] for x in rows], marker="o", label="µs / update")
        a1.plot(n, [x["tick_ms_with_all_users_pending"] * 1000 for x in rows], marker="s",
                label="µs / tick (all users pending)")
        a1.set_xscale("log")
        a1.set_yscale("log")
        a1.set_xlabel("tracked users")
        a1.legend()
        a2.plot(n, [x["bytes_per_idle_user"] for x in rows], marker="o", label="idle user")
        a2.plot(n, [x["bytes_per_pending_user_1_event"] for x in rows], marker="s",
                label="user with 1 pending event")
        a2.axhline(1024, color="grey", linestyle=":", label="1 KB target (idle)")
        a2.set_xscale("log")
        a2.set_xlabel("tracked users")
        a2.set_ylabel("bytes / user")
        a2.legend()
        p = out / f"{name}-scale.png"
        fig.savefig(p, dpi=100, bbox_inches="tight")
        plt.close(fig)
        made.append(p)
    return made
