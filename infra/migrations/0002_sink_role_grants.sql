-- Least privilege for the sink: role vitrine_sink may connect to this database and upsert into
-- product_cards (services/sink/store.py), nothing else — no DELETE, TRUNCATE, DDL, temp tables,
-- other tables (schema_migrations included) or columns it does not write.
--
-- infra/stack up creates the role (LOGIN, password VITRINE_SINK_PG_PASSWORD, no other attribute)
-- before migrating; elsewhere a DBA creates it first:  CREATE ROLE vitrine_sink LOGIN PASSWORD ...
-- The migration owner (vitrine) keeps owning every table.
--
-- Why these grants and no fewer (verified against PostgreSQL 15 with the real upsert):
--   * INSERT ... ON CONFLICT DO UPDATE needs UPDATE on the SET columns even when no row conflicts
--     (it is checked when the statement is planned), and INSERT on the inserted columns;
--   * it needs SELECT on the conflict target (bucket, object_key), on every column read through
--     EXCLUDED.* or product_cards.* in the SET list and in the newest-wins WHERE guard — which is
--     every written column plus results_applied. Only created_at, updated_at and the generated
--     search column stay unreadable.
-- A later migration that adds a column the sink writes must grant it too (tests/test_security.py
-- runs the real UPSERT as vitrine_sink and fails otherwise).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vitrine_sink') THEN
        RAISE EXCEPTION 'role vitrine_sink does not exist: infra/stack up creates it '
            '(or CREATE ROLE vitrine_sink LOGIN PASSWORD ... as a superuser), then migrate again';
    END IF;
    -- Nobody but the owner and the roles granted below may connect or create temp tables.
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO vitrine_sink', current_database());
END
$$;

-- PostgreSQL 15+ already denies CREATE on schema public to PUBLIC; older servers did not (there,
-- as a non-owner of the schema, this only warns — run it as a superuser).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

REVOKE ALL ON TABLE product_cards, schema_migrations FROM PUBLIC;
REVOKE ALL ON TABLE product_cards, schema_migrations FROM vitrine_sink;

GRANT INSERT (
    bucket, object_key, version_id, etag, size_bytes, content_type, sequencer, event_time,
    status, status_rank, product_name, category_standard, description_long, color_primary,
    features_list, card, reason, detail, model_id, prompt_version, attempts, timings,
    job_id, trace_id, produced_at
) ON product_cards TO vitrine_sink;

-- Not bucket, object_key (a row's identity) nor created_at.
GRANT UPDATE (
    version_id, etag, size_bytes, content_type, sequencer, event_time,
    status, status_rank, product_name, category_standard, description_long, color_primary,
    features_list, card, reason, detail, model_id, prompt_version, attempts, timings,
    job_id, trace_id, produced_at, results_applied, updated_at
) ON product_cards TO vitrine_sink;

GRANT SELECT (
    bucket, object_key, version_id, etag, size_bytes, content_type, sequencer, event_time,
    status, status_rank, product_name, category_standard, description_long, color_primary,
    features_list, card, reason, detail, model_id, prompt_version, attempts, timings,
    job_id, trace_id, produced_at, results_applied
) ON product_cards TO vitrine_sink;
