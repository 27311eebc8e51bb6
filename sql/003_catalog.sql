-- Catalog integrity. A goods binding names the SKU as it is sold (goods, source, channel), and
-- nothing that is referenced can be deleted or re-keyed under what refers to it: an activity's
-- discount, an activity's SKU, an activity's teams (trade history is never deleted).
-- Constraint names are the API's: the service translates each into a field-level message.

-- A binding that already disagrees with its SKU stops the migration, named, for the operator
-- to fix (PUT the activity's goods or the SKU) before migrating again: nothing is guessed.
DO $$
DECLARE
    bad text;
BEGIN
    SELECT string_agg(format('activity %s binds goods %s under %s/%s but the SKU is %s/%s',
                             m.activity_id, m.goods_id, m.source, m.channel, s.source, s.channel),
                      '; ' ORDER BY m.id)
    INTO bad
    FROM sc_sku_activity m JOIN sku s ON s.goods_id = m.goods_id
    WHERE (s.source, s.channel) <> (m.source, m.channel);
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'goods bindings disagree with their SKU: %', bad
            USING HINT = 'PUT the activity''s goods or the SKU so they agree, then migrate again';
    END IF;
END $$;

ALTER TABLE sku ADD CONSTRAINT sku_goods_source_channel_key UNIQUE (goods_id, source, channel);

-- Changing a bound SKU's source or channel, or deleting it, is refused (the existing unique
-- (source, channel, goods_id) index serves the check from the SKU's side).
ALTER TABLE sc_sku_activity
    DROP CONSTRAINT sc_sku_activity_goods_id_fkey,
    ADD CONSTRAINT binding_sku_fkey FOREIGN KEY (goods_id, source, channel)
        REFERENCES sku (goods_id, source, channel) ON UPDATE RESTRICT ON DELETE RESTRICT;

-- Deleting an activity removes its bindings (unchanged: ON DELETE CASCADE), named.
ALTER TABLE sc_sku_activity
    RENAME CONSTRAINT sc_sku_activity_activity_id_fkey TO binding_activity_fkey;

ALTER TABLE group_buy_activity
    DROP CONSTRAINT group_buy_activity_discount_id_fkey,
    ADD CONSTRAINT activity_discount_fkey FOREIGN KEY (discount_id)
        REFERENCES group_buy_discount (discount_id) ON UPDATE RESTRICT ON DELETE RESTRICT;
CREATE INDEX group_buy_activity_discount_idx ON group_buy_activity (discount_id);

-- An activity with teams (and so member orders and callbacks) cannot be deleted.
ALTER TABLE group_buy_order
    DROP CONSTRAINT group_buy_order_activity_id_fkey,
    ADD CONSTRAINT team_activity_fkey FOREIGN KEY (activity_id)
        REFERENCES group_buy_activity (activity_id) ON UPDATE RESTRICT ON DELETE RESTRICT;
