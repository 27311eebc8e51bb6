-- Merchants as tenants. A merchant holds source+channel pairs (its shops); every team, order
-- and event belongs to the merchant of its source+channel. API keys authenticate a merchant
-- on the shop API; only their SHA-256 is stored (a key is 32 random bytes: a hash is enough,
-- no salt or stretching needed), and a revoked key stays listed.

CREATE TABLE merchant (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id text        NOT NULL UNIQUE
                CONSTRAINT merchant_id_form CHECK (merchant_id ~ '^[A-Za-z0-9_-]{1,32}$'),
    name        text        NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now()
);

-- A pair belongs to at most one merchant (the primary key).
CREATE TABLE merchant_binding (
    source      text        NOT NULL,
    channel     text        NOT NULL,
    merchant_id text        NOT NULL REFERENCES merchant (merchant_id) ON DELETE CASCADE,
    create_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT merchant_binding_pair_key PRIMARY KEY (source, channel)
);
CREATE INDEX merchant_binding_merchant_idx ON merchant_binding (merchant_id);

CREATE TABLE merchant_key (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id         text        NOT NULL UNIQUE,
    merchant_id    text        NOT NULL REFERENCES merchant (merchant_id) ON DELETE CASCADE,
    -- The key's first characters, to recognise it in a list; never enough to use it.
    prefix         text        NOT NULL,
    key_hash       bytea       NOT NULL CONSTRAINT merchant_key_hash_key UNIQUE
                   CONSTRAINT merchant_key_hash_is_sha256 CHECK (length(key_hash) = 32),
    create_time    timestamptz NOT NULL DEFAULT now(),
    last_used_time timestamptz,
    revoked_time   timestamptz
);
CREATE INDEX merchant_key_merchant_idx ON merchant_key (merchant_id, id);

-- An activity's goods never span two merchants, so every team of it has one merchant.
-- Checked whoever writes: after a goods binding or a merchant binding is written. Such writes
-- are serialised by one transaction-scoped advisory lock taken before the check reads, so two
-- concurrent writes cannot each pass on a snapshot without the other.
CREATE FUNCTION refuse_activity_spanning_merchants() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('groupbuy: activity merchants'));
    IF TG_TABLE_NAME = 'sc_sku_activity' THEN
        SELECT m.activity_id INTO bad
        FROM sc_sku_activity m JOIN merchant_binding b USING (source, channel)
        WHERE m.activity_id = NEW.activity_id
        GROUP BY m.activity_id HAVING count(DISTINCT b.merchant_id) > 1;
    ELSE
        SELECT m.activity_id INTO bad
        FROM sc_sku_activity m JOIN merchant_binding b USING (source, channel)
        WHERE m.activity_id IN (SELECT activity_id FROM sc_sku_activity
                                WHERE source = NEW.source AND channel = NEW.channel)
        GROUP BY m.activity_id HAVING count(DISTINCT b.merchant_id) > 1
        LIMIT 1;
    END IF;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'activity % would sell goods of two merchants', bad
            USING ERRCODE = 'check_violation', CONSTRAINT = 'activity_of_one_merchant';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER activity_of_one_merchant
    AFTER INSERT OR UPDATE OF source, channel, activity_id ON sc_sku_activity
    FOR EACH ROW EXECUTE FUNCTION refuse_activity_spanning_merchants();
CREATE TRIGGER activity_of_one_merchant
    AFTER INSERT OR UPDATE OF source, channel, merchant_id ON merchant_binding
    FOR EACH ROW EXECUTE FUNCTION refuse_activity_spanning_merchants();
