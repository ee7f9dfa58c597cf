-- The shop's facts (issue 24, schemas/facts.py): what the upload's user metadata said about the
-- product. SKU, brand and GTIN are copied onto the card (never generated) and kept on the row
-- whatever its status, so a shop finds its failures by SKU too; `facts` keeps every fact given
-- and the ones dropped for breaking their rules: {"facts": {...}, "problems": [{"fact", "detail"}]}.
ALTER TABLE product_cards
    ADD COLUMN sku   text,
    ADD COLUMN brand text,
    ADD COLUMN gtin  text,
    ADD COLUMN facts jsonb;

-- By SKU:    WHERE sku = '123'
-- By brand:  WHERE lower(brand) = lower('Tramontina')
-- Dropped:   WHERE jsonb_array_length(facts -> 'problems') > 0
CREATE INDEX product_cards_sku_idx ON product_cards (sku) WHERE sku IS NOT NULL;
CREATE INDEX product_cards_brand_idx ON product_cards (lower(brand)) WHERE brand IS NOT NULL;
CREATE INDEX product_cards_gtin_idx ON product_cards (gtin) WHERE gtin IS NOT NULL;

GRANT INSERT (sku, brand, gtin, facts) ON product_cards TO vitrine_sink;
GRANT UPDATE (sku, brand, gtin, facts) ON product_cards TO vitrine_sink;
GRANT SELECT (sku, brand, gtin, facts) ON product_cards TO vitrine_sink;

-- The reviewed cards with the shop's identifiers (columns added at the end: CREATE OR REPLACE
-- keeps the existing ones and their order).
CREATE OR REPLACE VIEW reviewed_cards AS
SELECT bucket, object_key, status, review_state, reviewed_by, reviewed_at,
       coalesce(edited_card, card) AS card, edited_card IS NOT NULL AS edited, card AS model_card,
       model_id, prompt_version, updated_at, sku, brand, gtin
FROM product_cards
WHERE status = 'done';
