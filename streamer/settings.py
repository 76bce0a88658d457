"""The one settings object.  Every field is read from ``STREAMER_<FIELD>`` (nested with ``__``).

Complex values (lists) are JSON, e.g. ``STREAMER_MODEL__BASE_URLS='["http://vllm-0:8000/v1"]'``.
Build :class:`Settings` once at start-up and pass it (or a part of it) down.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_of(section: type[BaseModel], name: str) -> Any:
    """The documented default of one setting: constructors that take a setting as a keyword
    default to this, so every default has exactly one source (the field below)."""
    return section.model_fields[name].get_default(call_default_factory=True)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def check_security(section: Any, prefix: str, sasl: bool, tls: bool, switch: str) -> None:
    """A connection's security settings are complete and consistent, or ValueError says which
    variable to set (``prefix`` + name)."""
    if sasl and not (section.sasl_username and section.sasl_password is not None):
        raise ValueError(f"{prefix}{switch} asks for SASL: set {prefix}SASL_USERNAME and "
                         f"{prefix}SASL_PASSWORD")
    ssl_files = {"SSL_CAFILE": section.ssl_cafile, "SSL_CERTFILE": section.ssl_certfile,
                 "SSL_KEYFILE": section.ssl_keyfile}
    if not tls and any(ssl_files.values()):
        named = ", ".join(prefix + k for k, v in ssl_files.items() if v)
        raise ValueError(f"{named} set but TLS is off ({prefix}{switch}): turn TLS on or unset "
                         "them")
    if bool(section.ssl_certfile) != bool(section.ssl_keyfile):
        raise ValueError(f"a client certificate needs both {prefix}SSL_CERTFILE and "
                         f"{prefix}SSL_KEYFILE")


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated host:port list of the Kafka brokers."""
    consumer_group: str = "prefstream"
    """Consumer group (faust app id) shared by all workers."""
    input_topic: str = "profiles.interactions.v1"
    """Interaction events, keyed by user_id."""
    output_topic: str = "profiles.summaries.v1"
    """Summary-changed events, keyed by user_id."""
    dead_letter_topic: str = "profiles.interactions.v1.dlq"
    """Invalid input records, original bytes plus `x-dlq-*` headers."""
    failures_topic: str = "profiles.update-failures.v1"
    """Notices of updates that kept the previous summary (model output rejected)."""
    event_source: str = Field("/prefstream", min_length=1)
    """CloudEvents ``source`` (header ``ce_source``) of the change events and failure notices."""
    partitions: int = Field(8, ge=1)
    """Partition count used when the worker or `streamer topics ensure` creates topics."""
    replication_factor: int = Field(1, ge=1)
    """Replication factor for created topics."""
    max_message_bytes: int = Field(1_048_576, ge=1024)
    """Input records larger than this are dead-lettered as `oversized`."""
    commit_interval_s: float = Field(1.0, gt=0)
    """Input offsets are committed on this interval (Kafka Streams' `commit.interval.ms`): every
    record consumed before a commit is durably buffered or dead-lettered.  After a crash at most
    about this much input is read again."""
    intake_batch: int = Field(500, ge=1)
    """Records decoded and buffered per batch (`stream.take_events`)."""
    intake_linger_s: float = Field(0.05, gt=0)
    """How long a partial intake batch waits for more records."""
    session_timeout_s: float = Field(10.0, ge=1)
    """Consumer-group session timeout: a member that stops heartbeating (SIGKILL) loses its
    partitions after this long (unless static membership lets it reclaim them sooner)."""
    heartbeat_interval_s: float = Field(1.0, gt=0)
    """Consumer-group heartbeat interval (well below the session timeout)."""
    group_instance_id: str | None = None
    """Static group membership (`group.instance.id`, KIP-345): a restarted member with the same
    id gets its partitions back without a rebalance.  The Helm chart sets the pod name."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How every Kafka client of the service connects (`security.protocol`): `SSL` and
    `SASL_SSL` use TLS (`ssl_*`), `SASL_*` authenticate with `sasl_*`."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    """SASL mechanism when `security_protocol` is `SASL_SSL` or `SASL_PLAINTEXT`."""
    sasl_username: str | None = None
    """SASL user (required with `SASL_*`)."""
    sasl_password: SecretStr | None = None
    """SASL password (required with `SASL_*`)."""
    ssl_cafile: str | None = None
    """PEM file of the CA(s) that sign the brokers' certificates; unset: the system trust store."""
    ssl_certfile: str | None = None
    """PEM client certificate (chain) for mutual TLS; needs `ssl_keyfile`."""
    ssl_keyfile: str | None = None
    """PEM private key of `ssl_certfile`."""
    ssl_key_password: SecretStr | None = None
    """Password of an encrypted `ssl_keyfile`."""
    ssl_check_hostname: bool = True
    """Verify that a broker's certificate names the host connected to (keep it on)."""

    @model_validator(mode="after")
    def _security_is_complete(self) -> KafkaSettings:
        check_security(self, "STREAMER_KAFKA__", self.security_protocol.startswith("SASL"),
                       self.security_protocol.endswith("SSL"), "SECURITY_PROTOCOL")
        return self


class CassandraSettings(_Section):
    hosts: list[str] = ["127.0.0.1"]
    """Contact points (JSON list)."""
    port: int = 9042
    """CQL native port."""
    keyspace: str = "prefstream"
    """Keyspace holding the summary tables."""
    local_dc: str = "datacenter1"
    """Local datacenter for DC-aware load balancing."""
    replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    """Replication map used when the keyspace is created by `streamer migrate`."""
    request_timeout_s: float = Field(30.0, gt=0)
    """Per-request timeout."""
    dedupe_ttl_s: int = Field(604800, ge=60)
    """How long applied event ids are remembered for deduplication (seconds; 7 days)."""
    username: str | None = None
    """User for Cassandra's PasswordAuthenticator (unset: no authentication)."""
    password: SecretStr | None = None
    """Password of `username`."""
    ssl_enabled: bool = False
    """Connect with TLS (the cluster's `client_encryption_options`), using `ssl_*`."""
    ssl_cafile: str | None = None
    """PEM file of the CA(s) that sign the nodes' certificates; unset: the system trust store."""
    ssl_certfile: str | None = None
    """PEM client certificate (chain) for mutual TLS (`require_client_auth`); needs
    `ssl_keyfile`."""
    ssl_keyfile: str | None = None
    """PEM private key of `ssl_certfile`."""
    ssl_key_password: SecretStr | None = None
    """Password of an encrypted `ssl_keyfile`."""
    ssl_check_hostname: bool = True
    """Verify that a node's certificate names the address connected to (keep it on)."""

    @model_validator(mode="after")
    def _security_is_complete(self) -> CassandraSettings:
        if self.password is not None and not self.username:
            raise ValueError("STREAMER_CASSANDRA__PASSWORD is set but STREAMER_CASSANDRA__USERNAME "
                             "is not: set both, or neither for a cluster without authentication")
        check_security(self, "STREAMER_CASSANDRA__", False, self.ssl_enabled, "SSL_ENABLED")
        return self


class ModelSettings(_Section):
    engine: Literal["openai", "baseline"] = "openai"
    """`openai`: an OpenAI-compatible server (vLLM); `baseline`: the CPU term-statistics engine."""
    base_urls: list[str] = ["http://127.0.0.1:8000/v1"]
    """OpenAI-compatible endpoints (JSON list), e.g. the vLLM pool."""
    model: str = "VanillaH1/AlignXplore-Plus"
    """Model id sent in requests."""
    api_key: SecretStr = SecretStr("EMPTY")
    """Bearer token for the model servers."""
    timeout_s: float = Field(300.0, gt=0)
    """Timeout of one model call (thinking can take minutes on a busy GPU)."""
    max_retries: int = Field(2, ge=0)
    """Retries of a failed call (timeouts, 429, 5xx), on the next endpoint."""
    max_concurrency: int = Field(16, ge=1)
    """Model calls in flight per worker (the model budget); beyond it due windows wait in the
    index and grow, intake goes on."""
    tokens_per_s: float | None = Field(None, gt=0)
    """Optional second model budget: estimated prompt tokens per second the worker may start
    (a token bucket with one second of burst); unset: only `max_concurrency` applies."""
    max_concurrency_per_endpoint: int = Field(8, ge=1)
    """Model calls in flight per endpoint; when all endpoints are full, calls wait for a slot."""
    health_interval_s: float = Field(5.0, gt=0)
    """Seconds between `GET /health` probes of each endpoint; failing endpoints are skipped."""
    breaker_failures: int = Field(5, ge=1)
    """Consecutive transient failures that open an endpoint's circuit breaker."""
    breaker_reset_s: float = Field(10.0, gt=0)
    """Seconds an open breaker waits before letting one trial request through."""
    dns_refresh_s: float = Field(30.0, gt=0)
    """Seconds between re-resolutions of `dns+http://host:port/v1` entries (headless services)."""
    temperature: float = 0.6
    """Sampling temperature (the reference setting)."""
    top_p: float = 0.95
    """Nucleus sampling (reference)."""
    top_k: int = 20
    """Top-k sampling (reference; vLLM extension)."""
    min_p: float = Field(0.0, ge=0, le=1)
    """Min-p sampling (reference: off; sent explicitly, llama.cpp defaults to 0.05)."""
    repetition_penalty: float = Field(1.0, gt=0)
    """Repetition penalty (reference: none; sent as `repeat_penalty` to llama.cpp)."""
    max_tokens: int = Field(4096, ge=1)
    """Output allowance, thinking included (reference)."""
    context_tokens: int = Field(16384, ge=256)
    """Serving context (vLLM max_model_len): prompt + max_tokens must fit; older interactions
    of an oversized window are dropped (and recorded) until it does."""
    output_attempts: int = Field(3, ge=1)
    """Attempts to get a well-formed reply before keeping the previous summary."""
    max_summary_chars: int = Field(8000, ge=1)
    """Replies whose summary is longer are rejected."""
    extra_body: dict[str, Any] = {}
    """Extra top-level fields for every chat request (JSON object), e.g. `{"seed": 7}` or a
    llama.cpp `grammar`; they cannot replace `model`, `messages` or the sampling fields."""
    dialect: Literal["auto", "vllm", "sglang", "llamacpp", "openai"] = "auto"
    """The servers' engine: `auto` reads it from each endpoint's `/v1/models` (`owned_by`);
    it decides the sampling field names, token counting and load signal."""
    self_check: bool = True
    """`streamer worker` checks every reachable endpoint at startup (model served, context,
    sampling fields accepted) and stops with what to change; `streamer doctor` shows it."""
    routing: Literal["load", "outstanding"] = "load"
    """`load`: route on the server's own queue (vLLM/SGLang/llama.cpp `/metrics`) where it is
    exported, else on our outstanding requests; `outstanding`: our outstanding requests only."""
    load_interval_s: float = Field(1.0, gt=0)
    """Seconds between reads of each endpoint's load (`routing=load`)."""
    affinity: Literal["none", "user"] = "none"
    """`user`: a user's updates prefer one endpoint (a consistent hash of the user id), so they
    reuse its prefix cache; a full or failed endpoint is skipped."""
    reasoning: Literal["required", "optional"] = "required"
    """`required` (AlignXplore+): a reply must carry its thinking, inline (`<think>…</think>`)
    or split out by the server (`reasoning`/`reasoning_content`); `optional`: a reply with no
    thinking at all is taken whole as the summary (a non-reasoning summarizer)."""


class WindowSettings(_Section):
    max_events: int = Field(8, ge=1)
    """A user's window closes when it holds this many events..."""
    max_age_s: float = Field(30.0, ge=0)
    """...or when its oldest event has waited this long (seconds)."""
    rating_threshold: float = Field(0.7, ge=0, le=1)
    """Ratings >= threshold x scale_max are positive."""
    max_tokens: int | None = Field(None, ge=1)
    """...or when its pending events' estimated prompt tokens reach this (unset: no token rule)..."""
    min_interval_s: float = Field(0.0, ge=0)
    """...but never sooner than this after the user's previous update (a per-user rate limit:
    events meanwhile join the next window)."""
    max_events_per_update: int = Field(64, ge=1)
    """One model call carries at most this many events; a larger window (a user whose window
    grew under overload) is applied as a chain of consecutive versions."""
    retry_backoff_s: float = Field(2.0, gt=0)
    """First wait before a failed update is retried; doubles with each attempt."""
    retry_backoff_max_s: float = Field(300.0, gt=0)
    """Longest wait between retries."""
    park_after_attempts: int = Field(5, ge=1)
    """A window failing for a non-retriable reason (output rejected, 4xx, unexpected error) is
    parked after this many attempts (`streamer parked list|retry|drop`)."""
    max_event_age_s: float = Field(400 * 86400, gt=0)
    """Events whose occurred_at is older than this are dead-lettered (`timestamp_too_old`)."""
    max_clock_skew_s: float = Field(86400, ge=0)
    """Events more than this in the future are dead-lettered (`timestamp_in_future`)."""


class QualitySettings(_Section):
    sample_rate: float = Field(1.0, ge=0, le=1)
    """Share of windows whose previous summary the judge scores on the window's pairwise
    choices (a deterministic hash of user and version); 0 turns the quality score off."""
    baseline_rate: float = Field(0.1, ge=0, le=1)
    """Share of scored windows also judged with an empty summary (the no-summary baseline)."""
    max_pairs: int = Field(8, ge=1)
    """Pairs judged per window at most (one short judge call each)."""
    max_concurrency: int = Field(4, ge=1)
    """Judge calls in flight per worker; they start only while the model budget has a free
    slot (updates first), else the window goes unscored."""
    timeout_s: float = Field(60.0, gt=0)
    """A window's judging gives up after this long; the version is stored unscored."""
    wait_s: float = Field(5.0, ge=0)
    """The judging runs beside the update call; once that call is done, the new version waits
    at most this long for its score, then is stored unscored (a slow judge never holds an
    update back longer)."""
    judge_urls: list[str] = []
    """OpenAI-compatible endpoints of the judge (JSON list); empty: the model pool itself."""
    judge_model: str | None = None
    """Judge model id; unset: `STREAMER_MODEL__MODEL`.  `baseline` is the labelled CPU baseline
    judge (term overlap, not a language model): the default of the embedded demo."""
    judge_extra_body: dict[str, Any] = {}
    """Extra top-level fields of every judge call (JSON object), e.g. a llama.cpp `grammar`
    that holds a small judge to `{"selection": "Item A"}`."""
    seed: int = 0
    """Seed of the sampling and of the A/B order of judged pairs."""
    keep_triples: bool = True
    """Store each version's window as the model saw it (its triples), so that `streamer
    export-training` can write (previous summary, triples, score, summary) records."""


class ApiSettings(_Section):
    host: str = "0.0.0.0"
    """Address the read API (`streamer api`) listens on."""
    port: int = Field(8080, ge=1, le=65535)
    """Port of the read API."""
    token: SecretStr | None = None
    """Admin bearer token: the write route (rollback) and every read; unset disables writes
    (403)."""
    read_tokens: SecretStr | None = None
    """Bearer tokens of the read scope (summary, history, `as_of`), comma-separated: several,
    so that each consumer has its own and can rotate it. Unset with no admin token and no
    anonymous reads: reads answer 403."""
    anonymous_reads: bool = False
    """Serve the read routes without a token (a local demo only; never expose such an API)."""
    as_of_max_versions: int = Field(10_000, ge=1)
    """An `as_of` read examines at most this many of the user's newest versions; an older point
    in time answers 422 (page the history instead)."""


class ForgetSettings(_Section):
    suppress_s: float = Field(86_400.0, ge=0)
    """After a user is deleted (`streamer forget`, `DELETE /v1/users/{id}`), events of that user
    are dropped for this long instead of re-creating the profile (updates in flight, late
    events); 0 turns it off (and the updater's two point reads per window, before and after it
    stores)."""


class CatalogSettings(_Section):
    enabled: bool = False
    """Materialize the item catalog topic in every worker and fill in items that events name by
    id only (an item with no text field).  Off: items are used exactly as sent."""
    topic: str = "profiles.items.v1"
    """The compacted catalog topic: key = item id, value = a `catalog.item` record, null =
    delete (`streamer catalog load` publishes one)."""
    grace_s: float = Field(300.0, ge=0)
    """How long an event whose item the catalog does not know yet waits for it (from the time it
    was buffered); after that it is applied without the item, and the version lists the item in
    `window.unresolved_item_ids`."""


class MappingSettings(_Section):
    file: str | None = None
    """A mapping file (YAML, see `deploy/mappings/`) the worker applies to every input record
    before validation: Segment, Snowplow or your own JSON to our events.  A record it cannot
    convert is dead-lettered with the mapping's reason.  Unset: records are our events."""


class Settings(BaseSettings):
    """prefstream configuration (environment prefix ``STREAMER_``)."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMER_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level."""
    log_format: Literal["json", "text"] = "json"
    """Log line format: `json` (one object per line, with the active span's `trace_id`/`span_id`)
    or `text`."""
    web_port: int = 6066
    """Worker HTTP port (faust web: /livez, /readyz, /stats)."""
    shutdown_timeout_s: float = Field(30.0, ge=0)
    """On SIGTERM, how long in-flight updates may finish; the rest is handed back (replayed by
    the partition's next owner)."""
    store: Literal["cassandra", "sqlite"] = "cassandra"
    """Profile store: Cassandra in production, SQLite for the embedded demo."""
    sqlite_path: str = "prefstream-demo.sqlite3"
    """SQLite database file when `store=sqlite`."""
    kafka: KafkaSettings = KafkaSettings()
    cassandra: CassandraSettings = CassandraSettings()
    model: ModelSettings = ModelSettings()
    window: WindowSettings = WindowSettings()
    quality: QualitySettings = QualitySettings()
    api: ApiSettings = ApiSettings()
    forget: ForgetSettings = ForgetSettings()
    catalog: CatalogSettings = CatalogSettings()
    mapping: MappingSettings = MappingSettings()
