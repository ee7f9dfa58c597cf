-- Category trees and per-category attributes (the card's leaf path, its id and its attributes),
-- and the pixel colour check beside the model's colour (issue 13).
ALTER TABLE product_cards
    ADD COLUMN category_path  text,    -- 'Calçados > Tênis > Tênis de Corrida'; category_standard is its root
    ADD COLUMN category_id    text,    -- the leaf's id in the tree the card was generated with
    ADD COLUMN attributes     jsonb,   -- the leaf's attributes (schemas/json/categories/<id>.schema.json)
    ADD COLUMN color_estimate text,    -- the product's colour as the pixels name it
    ADD COLUMN color_distance real,    -- CIEDE2000 from the model's colour to the pixels' colour
    ADD COLUMN checks         jsonb;   -- checks beside the card: {"colour": {..., "agrees": false}}

-- Cards written before trees: their flat category is a one-level path.
UPDATE product_cards
SET category_path = category_standard, attributes = '{}'::jsonb
WHERE card IS NOT NULL AND category_path IS NULL;

-- A subtree:    WHERE category_path = 'Calçados' OR category_path LIKE 'Calçados > %'
-- An attribute: WHERE attributes @> '{"material": "couro"}'
CREATE INDEX product_cards_category_path_idx ON product_cards (category_path text_pattern_ops);
CREATE INDEX product_cards_category_id_idx ON product_cards (category_id);
CREATE INDEX product_cards_attributes_idx ON product_cards USING gin (attributes jsonb_path_ops);
CREATE INDEX product_cards_colour_flag_idx ON product_cards ((checks -> 'colour' ->> 'agrees'))
    WHERE checks IS NOT NULL;

GRANT INSERT (category_path, category_id, attributes, color_estimate, color_distance, checks)
    ON product_cards TO vitrine_sink;
GRANT UPDATE (category_path, category_id, attributes, color_estimate, color_distance, checks)
    ON product_cards TO vitrine_sink;
GRANT SELECT (category_path, category_id, attributes, color_estimate, color_distance, checks)
    ON product_cards TO vitrine_sink;
