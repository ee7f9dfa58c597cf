"""Prometheus metrics of the inference service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

JOBS = Counter(
    "vitrine_inference_jobs_total", "Jobs finished, by status and reason.", ["status", "reason"]
)
MALFORMED = Counter("vitrine_inference_malformed_jobs_total", "Job messages that did not parse.")
STAGE_SECONDS = Histogram(
    "vitrine_inference_stage_seconds", "Time per pipeline stage.", ["stage"], buckets=STAGE_BUCKETS
)
TOKENS_PER_SECOND = Histogram(
    "vitrine_inference_tokens_per_second",
    "Generation speed per card.",
    buckets=(1, 2, 5, 10, 20, 40, 80, 160, 320, 640, 1280),
)
ATTEMPTS = Histogram(
    "vitrine_inference_generation_attempts", "Generations per card.", buckets=(1, 2, 3, 4, 5, 10)
)
MODEL_LOAD_SECONDS = Gauge("vitrine_inference_model_load_seconds", "Model load time.")
RETRIES = Counter(
    "vitrine_inference_transient_retries_total", "Retried transient faults.", ["what"]
)
BUSY = Gauge(
    "vitrine_inference_busy",
    "Jobs in flight: slots running a delivery, up to vitrine_inference_parallel (0 = idle).",
)
STARTED = Counter("vitrine_inference_jobs_started_total", "Jobs taken from vitrine.jobs.")
REDELIVERED = Counter(
    "vitrine_inference_redeliveries_total",
    "Deliveries after a delivery whose worker died (counted per first job of a delivery).",
)
BATCH_JOBS = Histogram(
    "vitrine_inference_batch_jobs",
    "Jobs taken per poll (1 for a slow model; more for a fast engine).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
HANDED_BACK = Counter(
    "vitrine_inference_handed_back_total", "Deliveries handed back unfinished at shutdown."
)
COMMITS_LOST = Counter(
    "vitrine_inference_commits_lost_total",
    "Offset commits refused after a rebalance (the job runs again elsewhere).",
)
MODEL_INFO = Gauge(
    "vitrine_inference_model_info",
    "The loaded model and prompt version (value 1).",
    ["model_id", "prompt_version", "engine"],
)

# -- the batched engine (slots.py): one llama.cpp context generating several cards at once ----
SLOTS = Gauge("vitrine_engine_slots", "Sequences the engine can generate at once.")
SLOTS_BUSY = Gauge("vitrine_engine_slots_busy", "Sequences generating now (prefill or decode).")
QUEUED = Gauge("vitrine_engine_queued", "Generations waiting for a free slot.")
BATCH_OCCUPANCY = Histogram(
    "vitrine_engine_batch_occupancy",
    "Sequences in each batched decode step (the engine's slots in use).",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
)
SEQUENCE_TOKENS_PER_SECOND = Histogram(
    "vitrine_engine_sequence_tokens_per_second",
    "Output tokens per second of one generation, seen by its own job (batch-mates share the "
    "device, so this falls as occupancy rises while the aggregate rate grows).",
    buckets=(0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640),
)

# -- rolling deliveries (delivery.py): up to the engine's parallel jobs in flight ---------------
PARALLEL = Gauge(
    "vitrine_inference_parallel", "Jobs the worker keeps in flight at most (the engine's slots)."
)
