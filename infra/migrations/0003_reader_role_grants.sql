-- A read-only login for the operator tools: role vitrine_reader may connect to this database and
-- read product_cards (vitrine status / cards / show, and the rows `vitrine reprocess` selects),
-- nothing else — no writes, no schema_migrations, no temporary tables.
--
-- infra/stack up and compose's setup job create the role (infra/roles.sql: LOGIN, password
-- VITRINE_READER_PG_PASSWORD, no other attribute) before migrating; elsewhere a DBA creates it
-- first:  CREATE ROLE vitrine_reader LOGIN PASSWORD ...

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vitrine_reader') THEN
        RAISE EXCEPTION 'role vitrine_reader does not exist: infra/stack up creates it '
            '(or CREATE ROLE vitrine_reader LOGIN PASSWORD ... as a superuser), then migrate again';
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO vitrine_reader', current_database());
END
$$;

REVOKE ALL ON TABLE product_cards, schema_migrations FROM vitrine_reader;
GRANT SELECT ON TABLE product_cards TO vitrine_reader;
