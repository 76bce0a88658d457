"""Capacity planning for a prefstream deployment (pure arithmetic, no I/O): ``streamer plan``.

Given a user population and its activity, :func:`plan` sizes the model pool (GPUs), the stream
workers, the Kafka topics, the pending buffer and the Cassandra store, and estimates freshness at
that load.  Every :class:`Row` of the result carries the formula behind its number with the
numbers plugged in.  Three kinds of constants feed it, each kept in one place below:

* **measured in this repository** (:data:`PROMPT_OVERHEAD_TOKENS` ... :data:`SUMMARY_BYTES`):
  sizes of the byte-exact AlignXplore+ prompt and of the bundled clickstream, counted with the
  real Qwen3 tokenizer; ``tests/unit/domain/test_capacity.py`` recounts them;
* **measured by ``make bench``** (:class:`BenchRatios`, recorded from
  ``bench/results/full-5.json``; ``streamer plan --bench FILE`` reads another results file);
* **public GPU figures** (:data:`GPUS`: datasheet memory, bandwidth and BF16 dense FLOPS) turned
  into serving throughput by a two-term roofline whose two efficiencies are fitted
  (:func:`calibrate`) on NVIDIA's published TensorRT-LLM throughput of Llama-3.1-8B on one H100
  (:data:`PUBLISHED_H100_FP8_LLAMA31_8B`); no figure is invented per GPU.

The model of the load
---------------------
Each user's ``E`` daily events arrive as a Poisson process over an active period of ``A``
seconds (``--active-hours``; 24 h, spread over the whole day, is the default and the upper bound
on calls).  A window opens at a user's first pending event and closes when it holds ``m``
events (``STREAMER_WINDOW__MAX_EVENTS``) or its oldest event is ``tau`` seconds old
(``STREAMER_WINDOW__MAX_AGE_S``).  With ``lambda = E / A`` and ``N(t)`` the events that follow
the first one within ``t`` (Poisson, mean ``lambda t``), a window holds ``min(1 + N(tau), m)``
events; after it closes the next window starts at the next event (memoryless), so by the
renewal-reward theorem

* events per window ``w = E[min(1 + N(tau), m)] = 1 + sum_{j=1}^{m-1} P(N(tau) >= j)``;
* model calls per user-day ``= E / w`` (at most ``A / min_interval`` with a minimum interval);
* a window stays open ``E[C] = E[min(tau, S_{m-1})] = sum_{j=0}^{m-2} P(N(tau) >= j+1) / lambda``
  (``S_k`` the arrival of the k-th following event);
* the mean wait of an event in its window is ``(E[C] + sum_{j=0}^{m-3} (j+1) P(N(tau) >= j+2) /
  lambda) / w``.

Peak load is the daily mean times a peak-to-mean factor (2 by default: an assumption, stated).

The model of a GPU (vLLM, continuous batching)
----------------------------------------------
Per request of ``I`` prompt and ``O`` completion tokens at saturation, GPU-seconds are
``(I + O) * 2 P / (F * e_c)`` (matmul FLOPs of ``P`` parameters at ``F`` peak FLOPS) plus
``O * (W + B * kv) / (BW * e_b) / B`` (each decode step reads the ``W`` weight bytes and the KV
cache ``kv = (I + O/2) * kv_per_token`` of the ``B`` sequences in the batch at ``BW`` bytes/s);
``B`` is what the KV cache holds (``0.9 * memory - W - 2 GB``, vLLM's default
``gpu_memory_utilization`` and an activation reserve), at most vLLM's default ``max_num_seqs``.
The two efficiencies ``e_c, e_b`` are least-squares fitted on the published H100 table (all ten
rows fit within 7 %) and applied unchanged to the BF16 AlignXplore+ (Qwen3-8B) on each GPU.
GPUs = peak (update and judge) GPU-seconds per second / (target utilisation x the bench's pool
efficiency).  A call's latency at that load is its prefill plus ``O`` decode steps of
``alpha + beta * b`` seconds (weights read once per step, compute and KV per sequence), stretched
by the share of GPU time the other calls' prefills and the judge take, at the ``b`` sequences per
GPU that Little's law gives (``b = r * latency(b)``, linear in ``b``: solved in closed form).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from schemas import (
    InputRange,
    JudgedPairs,
    QualityScore,
    SummaryChanged,
    SummaryRecord,
    TokenUsage,
    WindowFacts,
)

__all__ = [
    "BENCH_SOURCES",
    "DEFAULT_BENCH",
    "GPUS",
    "BenchRatios",
    "Efficiency",
    "Gpu",
    "ModelShape",
    "Plan",
    "PlanInputs",
    "Row",
    "bench_from_results",
    "calibrate",
    "max_batch",
    "n",
    "plan",
    "plan_default",
    "predicted_tokens_per_s",
    "window_model",
]

# =========================================================================== measured here
# Counted with the real Qwen3 tokenizer (streamer.adapters.llm.qwen_tokenizer) over the byte-exact
# prompt of streamer.domain.prompt and the bundled clickstream streamer/data/sample_clickstream.jsonl
# (960 events of 60 users in news, books and movies); the test suite recounts every one.

PROMPT_OVERHEAD_TOKENS = 240
"""The update prompt without past summary or triples: ``build_update_prompt(None, [])`` rendered
by the Qwen3 chat template (system message, user template, markers, generation prompt) is 243
tokens, less the 3 of ``Not Provided.`` (the slot the previous summary takes)."""
TOKENS_PER_TRIPLE = 82.9
"""Prompt tokens one rendered triple adds (its ``=====Triple i=====`` framing, query, chosen and
rejected item text), mean over the sample's 910 triples."""
TRIPLES_PER_EVENT = 0.948
"""Triples per event in the sample (910 / 960: unpaired dislikes make none, impressions can make
several)."""
PAIRS_PER_TRIPLE = 0.701
"""Share of triples with a real rejected item, i.e. a pairwise choice the judge can score."""
EVENT_BYTES = 619.2
"""One input record: mean JSON value 611.2 bytes plus an 8-byte key (user id) in the sample."""
EVENT_ID_BYTES = 17
"""Mean event id length in the sample (``evt-user-029-0001``)."""
TRIPLE_JSON_BYTES = 290.9
"""One stored window triple (``{"query", "chosen", "rejected"}`` JSON), mean over the sample."""
SUMMARY_TOKENS = 108
"""Tokens of a summary: the 641-character summary of the row ``make bench`` writes to measure the
store (``bench/stream_store.py``), counted with the Qwen3 tokenizer."""
SUMMARY_BYTES = 641
"""Characters (bytes) of that summary."""
JUDGE_PROMPT_TOKENS = 165.6
"""One judge call without the summary: the paper's pairwise prompt (``domain/judge.py``) on the
sample's pairs, chat template in non-thinking mode, mean."""
JUDGE_COMPLETION_TOKENS = 16
"""``max_tokens`` of the reference judge call."""
PENDING_ROW_EXTRA_BYTES = 168
"""``pending_events`` columns besides the record value: event id (17), digest (64 hex), partition
(4), offset (8), buffered_at (8), tokens (4), traceparent (55), kafka_ts (8)."""
PENDING_USER_ROW_BYTES = 20
"""``pending_users`` row: partition (4), user id (8), first_at (8)."""
APPLIED_ROW_BYTES = 98
"""``profile_log`` index row: user id (8), kind (1), seq (4), event id (17), version (4), digest
(64)."""
CASSANDRA_GC_GRACE_S = 864_000
"""Cassandra's default ``gc_grace_seconds`` (10 days; ``profile_log`` keeps it): expired
dedupe rows stay on disk until then."""


def _json_bytes(model: Any) -> int:
    return len(model.model_dump_json().encode())


_AT = datetime(2026, 1, 1, tzinfo=UTC)
_USAGE = TokenUsage(prompt_tokens=1000, completion_tokens=600)
_QUALITY = QualityScore(judge="VanillaH1/AlignXplore-Plus", scored_version=11, summary_age_s=900.0,
                        summary=JudgedPairs(pairs=1, correct=1, accuracy=1.0, mean_p_correct=0.71),
                        judge_calls=1, judge_prompt_tokens=280, judge_completion_tokens=7)
_WINDOW = WindowFacts(events=2, first_event_at=_AT, last_event_at=_AT, inputs=(InputRange(
    topic="profiles.interactions.v1", partition=17, first_offset=123456789,
    last_offset=123456790),))
RECORD_FIXED_BYTES = _json_bytes(SummaryRecord(
    user_id="user-029", version=12, previous_version=11, summary="",
    model="VanillaH1/AlignXplore-Plus", window_id="0" * 32, event_ids=(), usage=_USAGE,
    latency_ms=21000.0, created_at=_AT, window=_WINDOW))
"""A stored version without summary, event ids, triples or score, with its window facts
(``schemas.SummaryRecord`` as JSON: a proxy for the fixed columns of a ``profile_log`` version
row)."""
QUALITY_BYTES = _json_bytes(_QUALITY)
"""A stored quality score (``schemas.QualityScore`` JSON)."""
CHANGE_FIXED_BYTES = _json_bytes(SummaryChanged(
    event_id="0" * 32, user_id="user-029", version=12, previous_version=11, summary="",
    model="VanillaH1/AlignXplore-Plus", window_id="0" * 32, event_ids=(), usage=_USAGE,
    latency_ms=21000.0, occurred_at=_AT, previous_summary="", window=_WINDOW))
"""A ``SummaryChanged`` event without summaries (new and previous), event ids or score."""


# =========================================================================== measured by make bench


@dataclass(frozen=True, slots=True)
class BenchRatios:
    """What ``make bench`` measured that the plan uses (see ``bench/results/SUMMARY*.md``)."""

    ingest_events_per_s: float
    """(a) events/s one worker buffers durably (consume, decode, Cassandra write, commit), on 2
    vCPUs shared with the brokers, Cassandra and the load generator."""
    pending_user_bytes: float
    """(e) worker memory per pending user (intake + index, tracemalloc, 1,000,000 users)."""
    pool_efficiency: float
    """(3) updates/s achieved / pool capacity under bursts."""
    version_writes_per_s: float
    """(b) ``append`` versions/s on one Cassandra node (32 users in parallel, shared 2 vCPUs)."""
    pipeline_p50_s: float
    """(4) freshness p50 minus the window age and the model call: timer tick, commit, write,
    publish (the larger of the 50 % and 90 % load runs)."""
    pipeline_p99_s: float
    """(4) the same at p99."""
    source: str = ""


BENCH_SOURCES: dict[str, str] = {
    "ingest_events_per_s": "benchmarks.ingest.worker_events_per_s",
    "pending_user_bytes": "benchmarks.users.bytes_per_pending_user",
    "pool_efficiency": "benchmarks.pool.efficiency",
    "version_writes_per_s": "benchmarks.store.median_versions_per_s.append",
    "pipeline_p50_s": "benchmarks.fresh.levels[].p50_s - window.max_age_s - single_call_latency_s",
    "pipeline_p99_s": "benchmarks.fresh.levels[].p99_s - window.max_age_s - single_call_latency_s",
}
"""Where each ratio is in a bench results JSON (``bench/results/<name>.json``)."""


def _dig(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _positive(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) and value > 0 else None


def _pipeline(fresh: Any, quantile: str) -> float | None:
    if not isinstance(fresh, Mapping):
        return None
    age = _dig(fresh, "window.max_age_s")
    call = fresh.get("single_call_latency_s")
    levels = fresh.get("levels")
    if not isinstance(age, int | float) or not isinstance(call, int | float) \
            or not isinstance(levels, Sequence) or not levels:
        return None
    found = [lv[quantile] - age - call for lv in levels
             if isinstance(lv, Mapping) and isinstance(lv.get(quantile), int | float)]
    return max(0.0, *found) if found else None


def bench_from_results(doc: Mapping[str, Any], *, name: str,
                       fallback: BenchRatios) -> tuple[BenchRatios, tuple[str, ...]]:
    """The ratios a bench results document holds (``bench/results/full.json`` format), the rest
    from ``fallback``; also the names of the ratios taken from the document.  A partial run
    (``--only ...``, the quick mode) lacks some measurements."""
    base = fallback
    bench = doc.get("benchmarks") if isinstance(doc, Mapping) else None
    bench = bench if isinstance(bench, Mapping) else {}
    found: dict[str, float] = {}
    for key, path in BENCH_SOURCES.items():
        if key.startswith("pipeline_"):
            value = _pipeline(bench.get("fresh"), "p50_s" if key.endswith("p50_s") else "p99_s")
        else:
            value = _positive(_dig(bench, path.removeprefix("benchmarks.")))
        if value is not None:
            found[key] = value
    values = {f.name: getattr(base, f.name) for f in fields(BenchRatios) if f.name != "source"}
    values.update(found)
    taken = tuple(k for k in BENCH_SOURCES if k in found)
    source = name if len(taken) == len(BENCH_SOURCES) else \
        f"{name} ({', '.join(taken) or 'nothing'}), else {base.source}"
    return BenchRatios(**values, source=source), taken


_RECORDED: dict[str, Any] = {"benchmarks": {
    # bench/results/full-5.json (make bench, 2026-12-04, 2 vCPU AMD EPYC, 24 GB, Python 3.11.7)
    "ingest": {"worker_events_per_s": 3906.265685394783},
    "users": {"bytes_per_pending_user": 380.311257},
    "pool": {"efficiency": 0.994588787231344},
    "fresh": {"window": {"max_age_s": 2.0}, "single_call_latency_s": 0.43668524332810044,
              "levels": [{"level": 0.5, "p50_s": 2.6259856565002337, "p99_s": 3.210957160251387},
                         {"level": 0.9, "p50_s": 2.6525538780006173, "p99_s": 2.8605731624201503}]},
    "store": {"median_versions_per_s": {"append": 451.15947058132156}},
}}
"""The measurements of the latest full run, as they appear in its results file (the test suite
checks them against ``bench/results/full-5.json``)."""

_NOTHING = BenchRatios(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, source="-")
DEFAULT_BENCH, _TAKEN = bench_from_results(
    _RECORDED, name="bench/results/full-5.json", fallback=_NOTHING)
if len(_TAKEN) != len(BENCH_SOURCES):  # every recorded ratio must parse
    raise RuntimeError(f"recorded bench ratios incomplete: {_TAKEN}")
"""The recorded ratios: ingest 3,906 ev/s/worker, 380 B/pending user, pool efficiency 0.995,
451 versions/s/node, pipeline 0.22 s p50 / 0.77 s p99."""


# =========================================================================== GPUs and the model


@dataclass(frozen=True, slots=True)
class Gpu:
    """One GPU's datasheet figures and vLLM's defaults on it."""

    key: str
    name: str
    memory_bytes: float
    bandwidth_bytes_s: float
    bf16_flops: float
    """Dense BF16 tensor FLOPS (datasheets quote twice this "with sparsity")."""
    max_num_seqs: int
    """vLLM's default ``max_num_seqs`` for ``vllm serve``: 1024 on GPUs with >= 70 GiB that are
    not A100s, else 256 (``EngineArgs.get_batch_defaults``)."""
    source: str


GPUS: dict[str, Gpu] = {
    "h100": Gpu("h100", "H100 SXM5 80GB", 80e9, 3.35e12, 989e12, 1024,
                "NVIDIA H100 Tensor Core GPU datasheet (SXM5): 80 GB HBM3, 3.35 TB/s, BF16 "
                "1,979 TFLOPS with sparsity = 989 dense"),
    "a100": Gpu("a100", "A100 SXM4 80GB", 80e9, 2.039e12, 312e12, 256,
                "NVIDIA A100 Tensor Core GPU datasheet (80GB SXM): 80 GB HBM2e, 2,039 GB/s, BF16 "
                "312 TFLOPS dense"),
    "l4": Gpu("l4", "L4 24GB", 24e9, 300e9, 121e12, 256,
              "NVIDIA L4 Tensor Core GPU datasheet: 24 GB GDDR6, 300 GB/s, BF16 242 TFLOPS with "
              "sparsity = 121 dense"),
}
H100_FP8_FLOPS = 1979e12
"""H100 SXM5 dense FP8 FLOPS (3,958 with sparsity): the precision of the published table."""
GPU_MEMORY_UTILIZATION = 0.9
"""vLLM's default ``gpu_memory_utilization``."""
ACTIVATION_RESERVE_BYTES = 2e9
"""Memory kept from the KV cache for activations and CUDA graphs (an estimate)."""


@dataclass(frozen=True, slots=True)
class ModelShape:
    """A dense decoder's dimensions (its ``config.json``) and its serving precision."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    weight_bytes_per_param: float
    kv_bytes_per_value: float

    @property
    def matmul_params(self) -> int:
        """Parameters each token multiplies through: attention, MLP and the output head."""
        attention = self.hidden * self.heads * self.head_dim * 2 \
            + self.hidden * self.kv_heads * self.head_dim * 2
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (attention + mlp) + self.vocab * self.hidden

    @property
    def params(self) -> int:
        return self.matmul_params + (0 if self.tied_embeddings else self.vocab * self.hidden)

    @property
    def weight_bytes(self) -> float:
        return self.params * self.weight_bytes_per_param

    @property
    def kv_bytes_per_token(self) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.kv_bytes_per_value


ALIGNXPLORE_PLUS = ModelShape("AlignXplore+ (Qwen3-8B) BF16", layers=36, hidden=4096,
                              intermediate=12288, heads=32, kv_heads=8, head_dim=128,
                              vocab=151936, tied_embeddings=False, weight_bytes_per_param=2,
                              kv_bytes_per_value=2)
"""``Qwen/Qwen3-8B`` ``config.json`` (AlignXplore+ is a full fine-tune of it), served in BF16:
8.19 B parameters, 16.4 GB of weights, 144 KiB of KV cache per token."""
LLAMA31_8B_FP8 = ModelShape("Llama-3.1-8B-Instruct FP8", layers=32, hidden=4096,
                            intermediate=14336, heads=32, kv_heads=8, head_dim=128, vocab=128256,
                            tied_embeddings=False, weight_bytes_per_param=1, kv_bytes_per_value=1)
"""``nvidia/Llama-3.1-8B-Instruct-FP8`` (FP8 weights and KV cache), the published benchmark's."""

PUBLISHED_H100_FP8_LLAMA31_8B: tuple[tuple[int, int, float], ...] = (
    (128, 128, 28312), (128, 2048, 22714), (128, 4096, 14325), (500, 2000, 17660),
    (1000, 1000, 15220), (1000, 2000, 13899), (2048, 128, 3450), (2048, 2048, 9305),
    (5000, 500, 3459), (20000, 2000, 1351),
)
"""(input tokens, output tokens, output tokens/s) of Llama 3.1 8B FP8 on one H100 SXM 80GB, TP1,
maximum-throughput scenario: NVIDIA TensorRT-LLM, ``docs/source/performance/perf-overview.md``
("Llama 3.1 8B" table, ``trtllm-bench throughput``, PyTorch backend)."""
PUBLISHED_MAX_BATCH = 2048
"""The largest batch the published runs used (their CUDA-graph batch list), for the fit."""


@dataclass(frozen=True, slots=True)
class Efficiency:
    """Shares of peak reached at saturation: matmul FLOPS and memory bandwidth."""

    compute: float
    bandwidth: float


def max_batch(gpu: Gpu, model: ModelShape, prompt: float, completion: float, *,
              cap: int | None = None) -> int:
    """Sequences the KV cache holds at once: ``(0.9 * memory - weights - reserve) /
    ((prompt + completion / 2) * kv_per_token)``, at most ``cap`` (vLLM's ``max_num_seqs``).
    0 when the weights do not even fit."""
    budget = GPU_MEMORY_UTILIZATION * gpu.memory_bytes - model.weight_bytes \
        - ACTIVATION_RESERVE_BYTES
    per_sequence = (prompt + completion / 2) * model.kv_bytes_per_token
    if budget <= per_sequence:
        return 0
    return min(cap or gpu.max_num_seqs, math.floor(budget / per_sequence))


def _terms(gpu: Gpu, flops: float, model: ModelShape, prompt: float, completion: float,
           batch: int) -> tuple[float, float]:
    """GPU-seconds per request at peak FLOPS and peak bandwidth: (compute, memory) terms."""
    compute = (prompt + completion) * 2 * model.matmul_params / flops
    kv = (prompt + completion / 2) * model.kv_bytes_per_token
    memory = completion * (model.weight_bytes + batch * kv) / gpu.bandwidth_bytes_s / batch
    return compute, memory


def calibrate(rows: Sequence[tuple[int, int, float]] = PUBLISHED_H100_FP8_LLAMA31_8B, *,
              gpu: Gpu | None = None, flops: float = H100_FP8_FLOPS,
              model: ModelShape = LLAMA31_8B_FP8, cap: int = PUBLISHED_MAX_BATCH) -> Efficiency:
    """Fit the two efficiencies on published (input, output, output tokens/s) rows: least squares
    of the relative error of ``t = compute / e_c + memory / e_b`` against ``t = output /
    tokens_per_s`` (linear in ``1/e_c, 1/e_b``: closed form)."""
    gpu = gpu or GPUS["h100"]
    saa = sab = sbb = sa = sb = 0.0
    for prompt, completion, tokens_per_s in rows:
        t = completion / tokens_per_s
        a, b = _terms(gpu, flops, model, prompt, completion,
                      max_batch(gpu, model, prompt, completion, cap=cap))
        a, b = a / t, b / t
        saa, sab, sbb, sa, sb = saa + a * a, sab + a * b, sbb + b * b, sa + a, sb + b
    det = saa * sbb - sab * sab
    inv_c, inv_b = (sa * sbb - sb * sab) / det, (sb * saa - sa * sab) / det
    return Efficiency(compute=1 / inv_c, bandwidth=1 / inv_b)


def predicted_tokens_per_s(prompt: int, completion: int, eff: Efficiency, *,
                           gpu: Gpu | None = None, flops: float = H100_FP8_FLOPS,
                           model: ModelShape = LLAMA31_8B_FP8,
                           cap: int = PUBLISHED_MAX_BATCH) -> float:
    """Output tokens/s the fitted model predicts for a published row (to check the fit)."""
    gpu = gpu or GPUS["h100"]
    a, b = _terms(gpu, flops, model, prompt, completion,
                  max_batch(gpu, model, prompt, completion, cap=cap))
    return completion / (a / eff.compute + b / eff.bandwidth)


CALIBRATED = calibrate()
"""The efficiencies fitted on the published H100 table (compute ~0.54, bandwidth ~0.86)."""


# =========================================================================== inputs

def _knob(default: Any, doc: str) -> Any:
    """A planner assumption or constant, defaulted here."""
    return field(default=default, metadata={"help": doc})


def _required(doc: str) -> Any:
    """An input without a default: the question itself, or a ``STREAMER_*`` setting (``doc``
    names it) whose configured value the caller passes."""
    return field(metadata={"help": doc, "required": True})


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanInputs:
    """What a plan is computed from.  Fields without a default are ``STREAMER_*`` settings (the
    CLI passes their configured values, so each default has one source); the others are the
    planner's own assumptions and constants, defaulted here."""

    users: int = _required("daily active users")
    events_per_user_day: float = _required("interaction events per user per day")
    reasoning_tokens: int = _required("thinking tokens the model writes per update (mean)")
    gpu: str = _required("GPU model of the vLLM pool")
    window_max_age_s: float = _required("STREAMER_WINDOW__MAX_AGE_S")
    window_max_events: int = _required("STREAMER_WINDOW__MAX_EVENTS")
    window_max_tokens: int | None = _required("STREAMER_WINDOW__MAX_TOKENS")
    window_min_interval_s: float = _required("STREAMER_WINDOW__MIN_INTERVAL_S")
    model_max_tokens: int = _required("STREAMER_MODEL__MAX_TOKENS")
    context_tokens: int = _required("STREAMER_MODEL__CONTEXT_TOKENS")
    model_max_concurrency: int = _required("STREAMER_MODEL__MAX_CONCURRENCY")
    max_concurrency_per_endpoint: int = _required("STREAMER_MODEL__MAX_CONCURRENCY_PER_ENDPOINT")
    quality_sample_rate: float = _required("STREAMER_QUALITY__SAMPLE_RATE")
    quality_baseline_rate: float = _required("STREAMER_QUALITY__BASELINE_RATE")
    quality_max_pairs: int = _required("STREAMER_QUALITY__MAX_PAIRS")
    keep_triples: bool = _required("STREAMER_QUALITY__KEEP_TRIPLES")
    dedupe_ttl_s: float = _required("STREAMER_CASSANDRA__DEDUPE_TTL_S")

    active_hours: float = _knob(24.0, "hours of the day a user's events are spread over (24: "
                                      "the whole day, the most calls)")
    peak_to_mean: float = _knob(2.0, "peak-hour load / daily mean load (an assumption)")
    target_utilisation: float = _knob(0.7, "share of GPU and worker capacity planned at peak")
    summary_tokens: float = _knob(SUMMARY_TOKENS, "tokens of a summary (previous and new)")
    tokens_per_event: float = _knob(round(TOKENS_PER_TRIPLE * TRIPLES_PER_EVENT, 1),
                                    "prompt tokens per event")
    event_bytes: float = _knob(EVENT_BYTES, "bytes of one input record (key + value)")
    kafka_retention_days: float = _knob(7.0, "input topic retention (Kafka's default "
                                             "log.retention.hours=168)")
    kafka_replication: int = _knob(3, "Kafka replication factor (the chart's "
                                      "config.kafka.replicationFactor)")
    cassandra_replication: int = _knob(3, "Cassandra replication factor (the chart's "
                                          "NetworkTopologyStrategy datacenter1: 3)")
    history_days: float = _knob(365.0, "days of summary history to hold (kept forever)")
    partition_mb_s: float = _knob(10.0, "produce throughput of one partition, MB/s (Confluent's "
                                        "rule of thumb: 10s of MB/s)")
    partition_growth: int = _knob(2, "partitions per planned worker (room to scale out: the "
                                     "partition count cannot change without moving users)")
    gpu_efficiency: float = _knob(1.0, "scale on the fitted GPU efficiencies (1: TensorRT-LLM's "
                                       "on H100; lower for a slower engine)")
    bench: BenchRatios = _knob(DEFAULT_BENCH, "ratios measured by make bench")

    def __post_init__(self) -> None:
        checks = [
            (self.users >= 1, "users must be >= 1"),
            (self.events_per_user_day > 0, "events per user-day must be > 0"),
            (self.reasoning_tokens >= 0, "reasoning tokens must be >= 0"),
            (self.gpu in GPUS, f"gpu must be one of {', '.join(GPUS)}"),
            (self.window_max_age_s >= 0, "window max age must be >= 0"),
            (self.window_max_events >= 1, "window max events must be >= 1"),
            (self.window_max_tokens is None or self.window_max_tokens >= 1,
             "window max tokens must be >= 1"),
            (self.window_min_interval_s >= 0, "window min interval must be >= 0"),
            (0 < self.active_hours <= 24, "active hours must be in (0, 24]"),
            (self.peak_to_mean >= 1, "peak-to-mean must be >= 1"),
            (0 < self.target_utilisation <= 1, "target utilisation must be in (0, 1]"),
            (self.summary_tokens >= 0 and self.tokens_per_event > 0 and self.event_bytes > 0,
             "token and byte sizes must be positive"),
            (self.kafka_replication >= 1 and self.cassandra_replication >= 1,
             "replication factors must be >= 1"),
            (self.kafka_retention_days > 0 and self.history_days > 0,
             "retention and history days must be > 0"),
            (self.partition_mb_s > 0 and self.partition_growth >= 1,
             "partition throughput must be > 0 and growth >= 1"),
            (self.gpu_efficiency > 0, "gpu efficiency must be > 0"),
            (self.model_max_concurrency >= 1 and self.max_concurrency_per_endpoint >= 1,
             "model concurrency must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def plan_default(name: str) -> Any:
    """The planner's own default of a :class:`PlanInputs` field (not a setting)."""
    for f in fields(PlanInputs):
        if f.name == name:
            if f.metadata.get("required"):
                raise KeyError(f"{name} has no default here (an input or a STREAMER_* setting)")
            return f.default
    raise KeyError(name)


# =========================================================================== the plan


@dataclass(frozen=True, slots=True)
class Row:
    """One planned quantity and the formula it came from (numbers plugged in)."""

    key: str
    section: str
    quantity: str
    value: float
    unit: str
    formula: str

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "section": self.section, "quantity": self.quantity,
                "value": self.value, "unit": self.unit, "formula": self.formula}


@dataclass(frozen=True, slots=True)
class Plan:
    inputs: PlanInputs
    rows: tuple[Row, ...]
    warnings: tuple[str, ...]
    sources: dict[str, str]

    def __getitem__(self, key: str) -> Row:
        for row in self.rows:
            if row.key == key:
                return row
        raise KeyError(key)

    def value(self, key: str) -> float:
        return self[key].value

    def as_dict(self) -> dict[str, Any]:
        inputs = {f.name: getattr(self.inputs, f.name) for f in fields(PlanInputs)
                  if f.name != "bench"}
        bench = {f.name: getattr(self.inputs.bench, f.name) for f in fields(BenchRatios)}
        return {"inputs": inputs | {"bench": bench}, "rows": [r.as_dict() for r in self.rows],
                "warnings": list(self.warnings), "sources": dict(self.sources)}


def n(x: float) -> str:
    """A number for a formula: thousands separators, 3 significant digits below 1000."""
    if x != x or math.isinf(x):
        return str(x)
    if x == int(x) and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 0.01 or x == 0:
        return f"{x:.3g}"
    return f"{x:.2e}"


def _poisson_cdf(k: int, mu: float) -> float:
    """P(N <= k) for N ~ Poisson(mu); 0 for k < 0."""
    if k < 0:
        return 0.0
    term = total = math.exp(-mu)
    for j in range(1, k + 1):
        term *= mu / j
        total += term
    return min(1.0, total)


def _tail(j: int, mu: float) -> float:
    """P(N >= j)."""
    return 1.0 - _poisson_cdf(j - 1, mu)


@dataclass(frozen=True, slots=True)
class WindowModel:
    """The Poisson window model of the module docstring for one user's rate."""

    events_per_window: float
    open_s: float
    """Mean time a window stays open (first event to close)."""
    mean_wait_s: float
    """Mean time an event waits in its window."""
    p99_wait_s: float
    """99th percentile of the first (longest-waiting) event's wait."""
    age_share: float
    """Share of windows closed by age rather than by count."""


def window_model(rate: float, max_age_s: float, max_events: int) -> WindowModel:
    mu = rate * max_age_s
    m = max_events
    w = 1.0 + sum(_tail(j, mu) for j in range(1, m))
    open_s = sum(_tail(j + 1, mu) for j in range(m - 1)) / rate
    inner = sum((j + 1) * _tail(j + 2, mu) for j in range(m - 2)) / rate
    age_share = _poisson_cdf(m - 2, mu) if m >= 2 else 0.0
    if m < 2:
        p99 = 0.0
    elif age_share >= 0.01:
        p99 = max_age_s
    else:  # the (m-1)-th following event's arrival, P(N(t) >= m-1) = 0.99, by bisection
        lo, hi = 0.0, max_age_s
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _tail(m - 1, rate * mid) < 0.99 else (lo, mid)
        p99 = hi
    return WindowModel(w, open_s, (open_s + inner) / w, p99, age_share)


def human_bytes(x: float) -> str:
    """3 significant digits in the largest unit it reaches once rounded (999.6 GB is 1 TB)."""
    x = float(f"{x:.3g}")
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.0f} B"


def plan(inputs: PlanInputs) -> Plan:
    """Size a deployment for ``inputs`` (raises ``ValueError`` when the model's output allowance
    cannot hold the reasoning and the summary, or the model does not fit the GPU)."""
    p = inputs
    rows: list[Row] = []
    warnings: list[str] = []
    bench = p.bench
    gpu = GPUS[p.gpu]
    model = ALIGNXPLORE_PLUS
    day = 86400.0
    u = p.target_utilisation

    def add(key: str, section: str, quantity: str, value: float, unit: str, formula: str) -> float:
        rows.append(Row(key, section, quantity, value, unit, formula))
        return value

    # ------------------------------------------------------------------ load and windows
    N, E, tau = p.users, p.events_per_user_day, p.window_max_age_s
    events_day = add("events_per_day", "load", "events per day", N * E, "events",
                     f"users × events/user-day = {n(N)} × {n(E)}")
    events_s = add("events_per_s_peak", "load", "events/s at peak",
                   events_day / day * p.peak_to_mean, "events/s",
                   f"{n(events_day)} / 86,400 s × peak-to-mean {n(p.peak_to_mean)}")
    m = p.window_max_events
    m_note = f"max events {n(m)}"
    if p.window_max_tokens is not None:
        per_event = EVENT_BYTES // 3 + 8  # services.flow.estimate_entry_tokens of a mean record
        by_tokens = max(1, math.ceil(p.window_max_tokens / per_event))
        if by_tokens < m:
            m, m_note = by_tokens, (f"min(max events {n(p.window_max_events)}, ceil(max tokens "
                                    f"{n(p.window_max_tokens)} / {n(per_event)} estimated "
                                    f"tokens/event)) = {n(by_tokens)}")
    active_s = p.active_hours * 3600
    rate = E / active_s
    wm = window_model(rate, tau, m)
    mu = rate * tau
    add("events_per_window", "load", "events per window (mean)", wm.events_per_window, "events",
        f"E[min(1 + Poisson(λτ), m)] with λτ = {n(E)} events / {n(active_s)} s × {n(tau)} s = "
        f"{n(mu)}, {m_note}; {n(wm.age_share * 100)} % of windows close by age")
    calls_user = E / wm.events_per_window
    calls_formula = f"events/user-day / events per window = {n(E)} / {n(wm.events_per_window)}"
    if p.window_min_interval_s > 0 and active_s / p.window_min_interval_s < calls_user:
        calls_user = active_s / p.window_min_interval_s
        calls_formula = (f"active s / min interval = {n(active_s)} / "
                         f"{n(p.window_min_interval_s)} (below {calls_formula})")
    add("calls_per_user_day", "load", "model calls per user-day", calls_user, "calls",
        calls_formula)
    calls_day = add("calls_per_day", "load", "model calls per day", N * calls_user, "calls",
                    f"users × calls/user-day = {n(N)} × {n(calls_user)}")
    calls_s = add("calls_per_s_peak", "load", "model calls/s at peak",
                  calls_day / day * p.peak_to_mean, "calls/s",
                  f"{n(calls_day)} / 86,400 s × {n(p.peak_to_mean)}")
    pairs = wm.events_per_window * TRIPLES_PER_EVENT * PAIRS_PER_TRIPLE
    judge_per_call = p.quality_sample_rate * (1 + p.quality_baseline_rate) * \
        min(p.quality_max_pairs, pairs)
    judge_day = add("judge_calls_per_day", "load", "judge calls per day (quality)",
                    calls_day * judge_per_call, "calls",
                    f"calls/day × sample rate {n(p.quality_sample_rate)} × (1 + baseline rate "
                    f"{n(p.quality_baseline_rate)}) × min(max pairs {n(p.quality_max_pairs)}, "
                    f"{n(wm.events_per_window)} events × {TRIPLES_PER_EVENT} triples/event × "
                    f"{PAIRS_PER_TRIPLE} pairs/triple) = {n(calls_day)} × {n(judge_per_call)}")
    judge_s = judge_day / day * p.peak_to_mean

    # ------------------------------------------------------------------ tokens
    events_tokens = wm.events_per_window * p.tokens_per_event
    prompt = add("prompt_tokens_per_call", "model", "prompt tokens per call",
                 PROMPT_OVERHEAD_TOKENS + p.summary_tokens + events_tokens, "tokens",
                 f"template {PROMPT_OVERHEAD_TOKENS} + previous summary {n(p.summary_tokens)} + "
                 f"{n(wm.events_per_window)} events × {n(p.tokens_per_event)} tokens/event")
    completion = add("completion_tokens_per_call", "model", "completion tokens per call",
                     p.reasoning_tokens + p.summary_tokens, "tokens",
                     f"reasoning {n(p.reasoning_tokens)} + summary {n(p.summary_tokens)}")
    if completion > p.model_max_tokens:
        raise ValueError(f"reasoning {p.reasoning_tokens} + summary {p.summary_tokens:g} tokens "
                         f"exceed STREAMER_MODEL__MAX_TOKENS={p.model_max_tokens}: every reply "
                         "would be cut before its summary")
    full_prompt = PROMPT_OVERHEAD_TOKENS + p.summary_tokens + m * p.tokens_per_event
    if full_prompt + p.model_max_tokens > p.context_tokens:
        warnings.append(f"a full window ({m} events, ~{full_prompt:.0f} prompt tokens) plus "
                        f"STREAMER_MODEL__MAX_TOKENS={p.model_max_tokens} exceeds "
                        f"STREAMER_MODEL__CONTEXT_TOKENS={p.context_tokens}: older events of "
                        "large windows are dropped from the prompt")

    # ------------------------------------------------------------------ GPUs
    eff = Efficiency(CALIBRATED.compute * p.gpu_efficiency,
                     min(1.0, CALIBRATED.bandwidth * p.gpu_efficiency))
    batch = max_batch(gpu, model, prompt, completion)
    if batch < 1:
        raise ValueError(f"{model.name} ({model.weight_bytes / 1e9:.1f} GB of weights) leaves no "
                         f"room for a {prompt + completion:.0f}-token sequence on a {gpu.name}")
    kv_seq = (prompt + completion / 2) * model.kv_bytes_per_token
    kv_budget = GPU_MEMORY_UTILIZATION * gpu.memory_bytes - model.weight_bytes \
        - ACTIVATION_RESERVE_BYTES
    add("gpu_batch", "gpu", "sequences per GPU at saturation", batch, "sequences",
        f"min(max_num_seqs {gpu.max_num_seqs}, (0.9 × {human_bytes(gpu.memory_bytes)} - weights "
        f"{human_bytes(model.weight_bytes)} - reserve {human_bytes(ACTIVATION_RESERVE_BYTES)}) / "
        f"(({n(prompt)} + {n(completion)}/2) tokens × {n(model.kv_bytes_per_token)} B KV/token))"
        f" = {human_bytes(kv_budget)} / {human_bytes(kv_seq)}")
    c_term, m_term = _terms(gpu, gpu.bf16_flops, model, prompt, completion, batch)
    gpu_s = add("gpu_seconds_per_call", "gpu", "GPU-seconds per call", c_term / eff.compute
                + m_term / eff.bandwidth, "s",
                f"({n(prompt)} + {n(completion)}) tokens × 2 × {n(model.matmul_params / 1e9)}e9 "
                f"params / ({n(gpu.bf16_flops / 1e12)} TFLOPS × {n(eff.compute)}) + "
                f"{n(completion)} × (weights {human_bytes(model.weight_bytes)} + {batch} × "
                f"{human_bytes(kv_seq)} KV) / ({n(gpu.bandwidth_bytes_s / 1e12)} TB/s × "
                f"{n(eff.bandwidth)}) / {batch} = {n(c_term / eff.compute)} + "
                f"{n(m_term / eff.bandwidth)}")
    j_prompt = JUDGE_PROMPT_TOKENS + p.summary_tokens
    j_batch = max_batch(gpu, model, j_prompt, JUDGE_COMPLETION_TOKENS)
    jc, jm = _terms(gpu, gpu.bf16_flops, model, j_prompt, JUDGE_COMPLETION_TOKENS, j_batch)
    judge_gpu_s = jc / eff.compute + jm / eff.bandwidth
    add("gpu_seconds_per_judge_call", "gpu", "GPU-seconds per judge call", judge_gpu_s, "s",
        f"the same for {n(j_prompt)} prompt ({JUDGE_PROMPT_TOKENS} + summary) and "
        f"{JUDGE_COMPLETION_TOKENS} completion tokens at batch {j_batch}")
    demand = calls_s * gpu_s + judge_s * judge_gpu_s
    gpus = add("gpus", "gpu", f"GPUs ({gpu.name})",
               float(max(1, math.ceil(demand / (u * bench.pool_efficiency)))), "GPUs",
               f"ceil((peak calls/s {n(calls_s)} × {n(gpu_s)} s + peak judge calls/s "
               f"{n(judge_s)} × {n(judge_gpu_s)} s) / (target utilisation {n(u)} × pool "
               f"efficiency {n(bench.pool_efficiency)}))")
    # A decode step over b sequences takes alpha + beta * b; the prefills of arriving calls (and
    # the judge calls) take a share f of the GPU in between, so steps stretch by 1 / (1 - f).  The
    # sequences per GPU solve b = r * (prefill + completion * step(b)) (Little's law).
    alpha = model.weight_bytes / gpu.bandwidth_bytes_s / eff.bandwidth
    beta = 2 * model.matmul_params / gpu.bf16_flops / eff.compute \
        + kv_seq / gpu.bandwidth_bytes_s / eff.bandwidth
    prefill_s = prompt * 2 * model.matmul_params / gpu.bf16_flops / eff.compute
    r = calls_s / gpus
    share = min(0.9, (calls_s * prefill_s + judge_s * judge_gpu_s) / gpus)
    stretch = 1 / (1 - share)
    denominator = 1 - r * completion * stretch * beta
    b_op = float(batch) if denominator <= 0 else min(
        float(batch), max(1.0, r * (prefill_s + completion * stretch * alpha) / denominator))
    step = (alpha + beta * b_op) * stretch
    latency = add("call_latency_s", "gpu", "call latency at the planned load",
                  prefill_s + completion * step, "s",
                  f"prefill {n(prompt)} tokens ({n(prefill_s)} s) + {n(completion)} tokens × "
                  f"decode step {n(step * 1000)} ms at {n(b_op)} sequences per GPU (b = r × "
                  f"latency, r = {n(calls_s)} calls/s / {n(gpus)} GPUs; steps stretched "
                  f"{n(stretch)}× by the prefills and judge calls between them); "
                  f"{n(1 / step)} tokens/s per request")

    # ------------------------------------------------------------------ workers
    workers = add("workers", "workers", "stream workers",
                  float(max(1, math.ceil(events_s / (bench.ingest_events_per_s * u)))), "workers",
                  f"ceil(peak events/s {n(events_s)} / (bench ingest {n(bench.ingest_events_per_s)}"
                  f" events/s/worker × {n(u)}))")
    in_flight = add("calls_in_flight", "workers", "model calls in flight at peak",
                    calls_s * latency, "calls",
                    f"peak calls/s × call latency = {n(calls_s)} × {n(latency)} s (Little's law)")
    add("updates_per_s_per_worker", "workers", "updates/s per worker at peak", calls_s / workers,
        "updates/s", f"peak calls/s / workers = {n(calls_s)} / {n(workers)} (make bench measures "
                     "intake per worker, not the CPU of an update: check this rate on a canary)")
    need_conc = add("max_concurrency_needed", "workers", "model concurrency needed per worker",
                    float(math.ceil(in_flight / workers)), "calls",
                    f"ceil(calls in flight / workers) = ceil({n(in_flight)} / {n(workers)}); "
                    f"STREAMER_MODEL__MAX_CONCURRENCY is {p.model_max_concurrency}")
    per_gpu = min(float(batch), in_flight / gpus)
    need_ep = add("max_concurrency_per_endpoint_needed", "workers",
                  "per-endpoint concurrency needed",
                  float(math.ceil(per_gpu / workers)), "calls",
                  f"ceil(calls in flight per GPU / workers) = ceil(min({batch}, {n(in_flight)} / "
                  f"{n(gpus)}) / {n(workers)}); STREAMER_MODEL__MAX_CONCURRENCY_PER_ENDPOINT is "
                  f"{p.max_concurrency_per_endpoint}")
    if need_conc > p.model_max_concurrency:
        warnings.append(f"STREAMER_MODEL__MAX_CONCURRENCY={p.model_max_concurrency} holds "
                        f"{p.model_max_concurrency * workers:.0f} calls in flight over "
                        f"{workers:.0f} workers, {in_flight:.0f} are needed: raise it to "
                        f"{need_conc:.0f} (or run {math.ceil(in_flight / p.model_max_concurrency)}"
                        " workers)")
    if need_ep > p.max_concurrency_per_endpoint:
        warnings.append(f"STREAMER_MODEL__MAX_CONCURRENCY_PER_ENDPOINT="
                        f"{p.max_concurrency_per_endpoint} caps each GPU at "
                        f"{p.max_concurrency_per_endpoint * workers:.0f} sequences from "
                        f"{workers:.0f} workers, {per_gpu:.0f} are planned: raise it to "
                        f"{need_ep:.0f}")

    # ------------------------------------------------------------------ Kafka
    bytes_s = events_s * p.event_bytes
    by_throughput = math.ceil(bytes_s / (p.partition_mb_s * 1e6))
    add("kafka_partitions", "kafka", "input topic partitions",
                     float(max(by_throughput, int(workers) * p.partition_growth)), "partitions",
                     f"max(ceil(peak {n(events_s)} events/s × {n(p.event_bytes)} B / "
                     f"{n(p.partition_mb_s)} MB/s per partition) = {by_throughput}, workers "
                     f"{n(workers)} × {p.partition_growth} to scale out); STREAMER_KAFKA__PARTITIONS"
                     " (the worker-replica ceiling)")
    add("kafka_retention_bytes", "kafka", "input topic on disk (retention)",
                    events_day * p.event_bytes * p.kafka_retention_days * p.kafka_replication,
                    "bytes",
                    f"events/day × bytes/event × retention days × RF = {n(events_day)} × "
                    f"{n(p.event_bytes)} B × {n(p.kafka_retention_days)} × {p.kafka_replication}"
                    " (uncompressed)")
    change_bytes = CHANGE_FIXED_BYTES + 2 * p.summary_tokens * SUMMARY_BYTES / SUMMARY_TOKENS + \
        wm.events_per_window * (EVENT_ID_BYTES + 3) + QUALITY_BYTES * p.quality_sample_rate
    add("kafka_summaries_bytes", "kafka", "summaries topic on disk (compacted)",
        N * change_bytes * p.kafka_replication, "bytes",
        f"users × change event bytes × RF = {n(N)} × {n(change_bytes)} B × "
        f"{p.kafka_replication} (one event per user after compaction; the active segments add "
        "the recent ones)")

    # ------------------------------------------------------------------ buffer
    pending_users = add("pending_users", "buffer", "open windows (pending users) at peak",
                        calls_s * (wm.open_s + latency), "users",
                        f"window opens/s × (open time + call) = {n(calls_s)} × ({n(wm.open_s)} s "
                        f"+ {n(latency)} s) (Little's law)")
    pending_events = add("pending_events", "buffer", "pending events at peak",
                         events_s * (wm.mean_wait_s + latency), "events",
                         f"peak events/s × (mean wait in window + call) = {n(events_s)} × "
                         f"({n(wm.mean_wait_s)} s + {n(latency)} s)")
    add("index_memory_bytes", "buffer", "pending index memory (all workers)",
        pending_users * bench.pending_user_bytes, "bytes",
        f"pending users × bench {n(bench.pending_user_bytes)} B/pending user = "
        f"{n(pending_users)} × {n(bench.pending_user_bytes)}; "
        f"{human_bytes(pending_users * bench.pending_user_bytes / workers)} per worker")
    pending_bytes = add("cassandra_pending_bytes", "buffer", "Cassandra pending tables",
                        (pending_events * (p.event_bytes + PENDING_ROW_EXTRA_BYTES)
                         + pending_users * PENDING_USER_ROW_BYTES) * p.cassandra_replication,
                        "bytes",
                        f"(pending events × ({n(p.event_bytes)} + {PENDING_ROW_EXTRA_BYTES}) B + "
                        f"pending users × {PENDING_USER_ROW_BYTES} B) × RF "
                        f"{p.cassandra_replication} (tombstones of applied windows, kept "
                        "gc_grace 1 h, not included)")

    # ------------------------------------------------------------------ Cassandra
    triples_bytes = wm.events_per_window * TRIPLES_PER_EVENT * TRIPLE_JSON_BYTES \
        if p.keep_triples else 0.0
    row_bytes = RECORD_FIXED_BYTES + p.summary_tokens * SUMMARY_BYTES / SUMMARY_TOKENS + \
        wm.events_per_window * (EVENT_ID_BYTES + 3) + triples_bytes + \
        QUALITY_BYTES * p.quality_sample_rate
    add("version_row_bytes", "cassandra", "bytes per stored version", row_bytes, "bytes",
        f"fixed {RECORD_FIXED_BYTES} + summary {n(p.summary_tokens * SUMMARY_BYTES / SUMMARY_TOKENS)}"
        f" + {n(wm.events_per_window)} event ids × {EVENT_ID_BYTES + 3} + triples "
        f"{n(triples_bytes)} (STREAMER_QUALITY__KEEP_TRIPLES={p.keep_triples}) + score "
        f"{QUALITY_BYTES} × {n(p.quality_sample_rate)} (payload as JSON, before compression)")
    rf = p.cassandra_replication
    history_day = add("cassandra_history_bytes_per_day", "cassandra",
                      "version rows: growth per day", calls_day * row_bytes * rf, "bytes/day",
                      f"versions/day × row bytes × RF = {n(calls_day)} × {n(row_bytes)} × {rf}")
    history = add("cassandra_history_bytes", "cassandra",
                  f"version rows after {n(p.history_days)} days", history_day * p.history_days,
                  "bytes", f"{human_bytes(history_day)}/day × {n(p.history_days)} days (no TTL: "
                           "every version is kept)")
    dedupe_days = (p.dedupe_ttl_s + CASSANDRA_GC_GRACE_S) / day
    applied = add("cassandra_applied_bytes", "cassandra", "dedupe index rows (TTL)",
                  events_day * APPLIED_ROW_BYTES * dedupe_days * rf, "bytes",
                  f"events/day × {APPLIED_ROW_BYTES} B × (TTL {n(p.dedupe_ttl_s / day)} d + "
                  f"gc_grace {n(CASSANDRA_GC_GRACE_S / day)} d) × RF = {n(events_day)} × "
                  f"{APPLIED_ROW_BYTES} × {n(dedupe_days)} × {rf}")
    add("cassandra_total_bytes", "cassandra", "Cassandra on disk (all tables)",
        history + applied + pending_bytes, "bytes",
        f"versions {human_bytes(history)} + dedupe {human_bytes(applied)} + "
        f"pending {human_bytes(pending_bytes)} (uncompressed payload)")
    add("cassandra_writes_per_s", "cassandra", "version writes/s at peak", calls_s, "versions/s",
        f"= peak calls/s (one conditional batch each: one Paxos round); bench: "
        f"{n(bench.version_writes_per_s)}/s on "
        f"one 2-vCPU node, so ≥ {math.ceil(calls_s / bench.version_writes_per_s)} such nodes "
        "before replication")

    # ------------------------------------------------------------------ freshness
    add("freshness_p50_s", "freshness", "freshness p50 (event → change event)",
        wm.mean_wait_s + latency + bench.pipeline_p50_s, "s",
        f"mean wait in window {n(wm.mean_wait_s)} s + call {n(latency)} s + pipeline "
        f"{n(bench.pipeline_p50_s)} s (bench p50)")
    add("freshness_p99_s", "freshness", "freshness p99", wm.p99_wait_s + latency
        + bench.pipeline_p99_s, "s",
        f"longest wait in window {n(wm.p99_wait_s)} s ("
        + ("max age" if wm.age_share >= 0.01 else "p99 time to fill the window")
        + f") + call {n(latency)} s + pipeline {n(bench.pipeline_p99_s)} s (bench p99); "
        + (f"no GPU queue: {n(b_op)} sequences per GPU < the {batch} its KV cache holds"
           if b_op < batch else "the GPUs are at KV capacity: calls queue, add GPUs"))

    sources = {
        "gpu": gpu.source,
        "gpu_throughput": (f"roofline fitted on TensorRT-LLM perf-overview, Llama 3.1 8B FP8 on "
                           f"H100 (e_compute {CALIBRATED.compute:.3f}, e_bandwidth "
                           f"{CALIBRATED.bandwidth:.3f}) × gpu efficiency {p.gpu_efficiency:g}"),
        "model": "Qwen/Qwen3-8B config.json (AlignXplore+), BF16",
        "bench": bench.source,
        "sizes": "prompt template and bundled clickstream, real Qwen3 tokenizer",
    }
    return Plan(p, tuple(rows), tuple(warnings), sources)
