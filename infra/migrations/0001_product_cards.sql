-- One row per object in the bucket: its identity, its latest status and, when done, its card.
-- Writers (the sink) upsert with a guard on (sequencer, status rank) so a stale or replayed
-- result never overwrites a newer one; see services/sink/store.py.
CREATE TABLE product_cards (
    bucket            text        NOT NULL,
    object_key        text        NOT NULL,
    version_id        text,
    etag              text,
    size_bytes        bigint,
    content_type      text,
    sequencer         numeric(40) NOT NULL,  -- MinIO's hex sequencer as a number: event order
    event_time        timestamptz NOT NULL,
    status            text        NOT NULL
        CHECK (status IN ('queued', 'done', 'rejected', 'failed', 'deleted')),
    status_rank       smallint    NOT NULL,  -- 0 queued, 1 final: a final status beats queued
    product_name      text,
    category_standard text,
    description_long  text,
    color_primary     text,
    features_list     jsonb,
    card              jsonb,
    reason            text,
    detail            text,
    model_id          text,
    prompt_version    text,
    attempts          integer     NOT NULL DEFAULT 0,  -- generation attempts of the latest result
    results_applied   integer     NOT NULL DEFAULT 1,  -- results that changed this row (replays do not)
    timings           jsonb,
    job_id            uuid,
    trace_id          text,
    produced_at       timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bucket, object_key),
    CHECK (status <> 'done' OR card IS NOT NULL),
    CHECK (status NOT IN ('rejected', 'failed') OR reason IS NOT NULL)
);

CREATE INDEX product_cards_status_idx ON product_cards (status, updated_at DESC);
CREATE INDEX product_cards_category_idx ON product_cards (category_standard) WHERE status = 'done';
CREATE INDEX product_cards_prompt_idx ON product_cards (model_id, prompt_version);

-- Portuguese full-text search over name + description: WHERE search @@ websearch_to_tsquery(...)
ALTER TABLE product_cards ADD COLUMN search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('portuguese', coalesce(product_name, '')), 'A')
    || setweight(to_tsvector('portuguese', coalesce(description_long, '')), 'B')
) STORED;
CREATE INDEX product_cards_search_idx ON product_cards USING gin (search);
