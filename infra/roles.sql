-- Roles and database of vitrine, run as the PostgreSQL superuser before infra/migrate.sh, by both
-- the native stack (infra/stack, provision_postgres) and compose's setup job
-- (infra/docker/setup.sh), so both get the same accounts:
--   * :user (VITRINE_PG_USER) owns the database and the tables and runs the migrations; it is no
--     superuser and cannot create databases or roles; no service gets its password (the setup
--     job and the operator's commands do);
--   * vitrine_sink is the sink's login, with no attribute at all: migration 0002 grants it
--     CONNECT and the upsert's columns. The connection limit keeps a leaked sink password from
--     exhausting the server's connections;
--   * vitrine_reader is the operator tools' read-only login (`vitrine status / cards / show`,
--     the PostgreSQL side of `reprocess`): migration 0003 grants it CONNECT and SELECT on
--     product_cards, nothing else;
--   * vitrine_review is the review desk's login (services/review): migration 0005 grants it
--     SELECT on the cards, UPDATE of the review columns only, its sessions and the review log.
-- Idempotent; passwords are re-set on every run so that they follow the environment. Values
-- arrive as psql variables (user, pw, db, sink_pw, reader_pw, review_pw) and are quoted by
-- format(%I/%L), never spliced into SQL.
SELECT format('CREATE ROLE %I', :'user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'user', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT 'CREATE ROLE vitrine_sink'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vitrine_sink') \gexec
SELECT format('ALTER ROLE vitrine_sink WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT '
              'NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 16 PASSWORD %L', :'sink_pw') \gexec
SELECT 'CREATE ROLE vitrine_reader'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vitrine_reader') \gexec
SELECT format('ALTER ROLE vitrine_reader WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT '
              'NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 8 PASSWORD %L', :'reader_pw') \gexec
SELECT 'CREATE ROLE vitrine_review'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vitrine_review') \gexec
SELECT format('ALTER ROLE vitrine_review WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT '
              'NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 16 PASSWORD %L', :'review_pw') \gexec
