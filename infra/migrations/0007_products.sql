-- Products (issue 24, schemas/products.py): a folder of photos committed by a manifest
-- (product.json) uploaded last. The product's row is the manifest's and lists its photos' keys
-- in the order the model saw them; each photo the manifest names ends 'grouped' (its card is
-- the product's, named in `detail`).
ALTER TABLE product_cards DROP CONSTRAINT product_cards_status_check;
ALTER TABLE product_cards ADD CONSTRAINT product_cards_status_check
    CHECK (status IN ('queued', 'done', 'rejected', 'failed', 'deleted', 'grouped'));
ALTER TABLE product_cards
    ADD COLUMN photo_keys text[],  -- a product's photos, in order
    ADD COLUMN main_photo text;    -- the one the pixel colour and the desk use

-- The product a photo belongs to:  WHERE 'shop-42/123/front.jpg' = ANY (photo_keys)
CREATE INDEX product_cards_photo_keys_idx ON product_cards USING gin (photo_keys)
    WHERE photo_keys IS NOT NULL;

GRANT INSERT (photo_keys, main_photo) ON product_cards TO vitrine_sink;
GRANT UPDATE (photo_keys, main_photo) ON product_cards TO vitrine_sink;
GRANT SELECT (photo_keys, main_photo) ON product_cards TO vitrine_sink;
