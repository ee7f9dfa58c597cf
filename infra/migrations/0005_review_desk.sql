-- The review desk (services/review, issue 14): people correct, approve or reject cards; every
-- edit and decision is kept; approved cards are published to vitrine.cards.approved.
--
-- Who owns what on product_cards:
--   * the sink writes the model's output: the card columns and `card` (the model's original
--     card, never touched by a person);
--   * the desk writes only the review columns below: `edited_card` is the person's card (NULL =
--     the model's card stands), `approved_card` the card as last approved (what a regenerated card
--     is diffed against), `review_rev` a counter for optimistic concurrency;
--   * a trigger (below) sends a card regenerated after a decision or an edit back to pending.
ALTER TABLE product_cards
    ADD COLUMN review_state  text        NOT NULL DEFAULT 'pending'
        CHECK (review_state IN ('pending', 'approved', 'rejected')),
    ADD COLUMN reviewed_by   text,
    ADD COLUMN reviewed_at   timestamptz,
    ADD COLUMN review_note   text,
    ADD COLUMN edited_card   jsonb,
    ADD COLUMN approved_card jsonb,
    ADD COLUMN review_rev    integer     NOT NULL DEFAULT 0;

-- The desk's list: newest first within a status / review state, keyset-paginated on
-- (updated_at, bucket, object_key).
CREATE INDEX product_cards_review_idx
    ON product_cards (review_state, updated_at DESC, bucket DESC, object_key DESC);
CREATE INDEX product_cards_updated_idx
    ON product_cards (updated_at DESC, bucket DESC, object_key DESC);

-- Search follows the person's edits: the effective name and description, the person's when
-- edited, else the model's.
DROP INDEX product_cards_search_idx;
ALTER TABLE product_cards DROP COLUMN search;
ALTER TABLE product_cards ADD COLUMN search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('portuguese',
        coalesce(edited_card ->> 'product_name', product_name, '')), 'A')
    || setweight(to_tsvector('portuguese',
        coalesce(edited_card ->> 'description_long', description_long, '')), 'B')
) STORED;
CREATE INDEX product_cards_search_idx ON product_cards USING gin (search);

-- Accounts of the desk and of the HTTP API. Passwords are argon2id hashes (argon2-cffi's
-- PasswordHasher); sessions and API tokens are stored as SHA-256 of the random token, so a
-- leaked table opens no session. Managed with `vitrine users add|remove|passwd|token`.
CREATE TABLE review_users (
    username            text        PRIMARY KEY CHECK (username ~ '^[a-z0-9][a-z0-9._@-]{0,63}$'),
    role                text        NOT NULL CHECK (role IN ('viewer', 'reviewer', 'admin')),
    password_hash       text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE review_sessions (
    token_hash   bytea       PRIMARY KEY,
    username     text        NOT NULL REFERENCES review_users ON DELETE CASCADE,
    csrf_token   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX review_sessions_user_idx ON review_sessions (username);

CREATE TABLE api_tokens (
    token_hash   bytea       PRIMARY KEY,
    username     text        NOT NULL REFERENCES review_users ON DELETE CASCADE,
    name         text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    UNIQUE (username, name)
);

-- Every edit and decision, and every regeneration that undid one. `before`/`after` are whole
-- cards (the effective card before and after); `fields` the card fields that changed. An
-- approval is also the outbox of vitrine.cards.approved: `published_at` is set once the message
-- is acknowledged by Kafka, and the desk retries the ones left NULL.
CREATE TABLE card_reviews (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bucket       text        NOT NULL,
    object_key   text        NOT NULL,
    reviewer     text        NOT NULL,   -- a username, or 'pipeline' for a regeneration
    at           timestamptz NOT NULL DEFAULT now(),
    decision     text        NOT NULL
        CHECK (decision IN ('edit', 'approve', 'reject', 'regenerate', 'reset')),
    fields       text[]      NOT NULL DEFAULT '{}',
    before       jsonb,
    after        jsonb,
    note         text,
    edited       boolean     NOT NULL DEFAULT false,  -- approve: the approved card is a person's
    published_at timestamptz,
    FOREIGN KEY (bucket, object_key) REFERENCES product_cards (bucket, object_key)
);
CREATE INDEX card_reviews_object_idx ON card_reviews (bucket, object_key, id DESC);
CREATE INDEX card_reviews_outbox_idx ON card_reviews (id)
    WHERE decision = 'approve' AND published_at IS NULL;

-- A new card from the pipeline (reprocess, an overwritten photo) bumps review_rev, so an edit
-- made on the old card is refused; if a person had decided on or edited the old card, the row
-- goes back to pending, the person's edit is dropped (it was an edit of the old output) and the
-- reset is logged. approved_card stays: the desk shows the new card's diff against it.
-- SECURITY DEFINER: the sink, which has no right on card_reviews, still leaves the log line.
CREATE FUNCTION product_cards_card_changed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NEW.card IS DISTINCT FROM OLD.card THEN
        NEW.review_rev := OLD.review_rev + 1;
        IF OLD.review_state <> 'pending' OR OLD.edited_card IS NOT NULL THEN
            INSERT INTO card_reviews (bucket, object_key, reviewer, decision, before, after, note)
            VALUES (OLD.bucket, OLD.object_key, 'pipeline', 'reset',
                    coalesce(OLD.edited_card, OLD.card), NEW.card,
                    format('regenerated (%s) while %s', NEW.status, OLD.review_state));
            NEW.review_state := 'pending';
            NEW.edited_card := NULL;
            NEW.reviewed_by := NULL;
            NEW.reviewed_at := NULL;
            NEW.review_note := NULL;
        END IF;
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION product_cards_card_changed() FROM PUBLIC;
CREATE TRIGGER product_cards_card_changed BEFORE UPDATE OF card ON product_cards
    FOR EACH ROW EXECUTE FUNCTION product_cards_card_changed();

-- Cards as a shop would read them: the person's card where edited, with its review state.
CREATE VIEW reviewed_cards AS
SELECT bucket, object_key, status, review_state, reviewed_by, reviewed_at,
       coalesce(edited_card, card) AS card, edited_card IS NOT NULL AS edited, card AS model_card,
       model_id, prompt_version, updated_at
FROM product_cards
WHERE status = 'done';

-- The desk's login, vitrine_review (infra/roles.sql creates it): read the cards, write only the
-- review columns, its sessions and the reviews table. Not: any card column the sink writes,
-- accounts or API tokens (only `vitrine users`, as the owner, creates those), DELETE on cards
-- or reviews, DDL. tests/test_security.py runs the desk's real statements as this role.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'vitrine_review') THEN
        RAISE EXCEPTION 'role vitrine_review does not exist: infra/stack up creates it '
            '(or CREATE ROLE vitrine_review LOGIN PASSWORD ... as a superuser), then migrate again';
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO vitrine_review', current_database());
END
$$;
REVOKE ALL ON TABLE product_cards, schema_migrations, review_users, review_sessions, api_tokens,
    card_reviews FROM PUBLIC;
REVOKE ALL ON TABLE product_cards, schema_migrations, review_users, review_sessions, api_tokens,
    card_reviews FROM vitrine_review;
GRANT SELECT ON product_cards TO vitrine_review;
GRANT UPDATE (review_state, reviewed_by, reviewed_at, review_note, edited_card, approved_card,
    review_rev) ON product_cards TO vitrine_review;
GRANT SELECT, INSERT ON card_reviews TO vitrine_review;
GRANT UPDATE (published_at) ON card_reviews TO vitrine_review;
GRANT SELECT (username, role, password_hash) ON review_users TO vitrine_review;  -- logins
GRANT SELECT, INSERT, DELETE ON review_sessions TO vitrine_review;
GRANT SELECT (token_hash, username, name) ON api_tokens TO vitrine_review;
GRANT UPDATE (last_used_at) ON api_tokens TO vitrine_review;
-- The read-only operator role sees the reviews too (vitrine show prints them).
GRANT SELECT ON card_reviews TO vitrine_reader;
GRANT SELECT ON reviewed_cards TO vitrine_reader, vitrine_review;
