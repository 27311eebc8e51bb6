-- Trade core: discounts, goods, activities, teams (group_buy_order) and member orders.
-- Every concurrency rule lives here as a constraint; the service only issues
-- conditional statements against it.

CREATE TABLE group_buy_discount (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    discount_id    text        NOT NULL UNIQUE,
    discount_name  text        NOT NULL,
    discount_desc  text        NOT NULL DEFAULT '',
    discount_type  smallint    NOT NULL DEFAULT 0 CHECK (discount_type IN (0, 1)),
    market_plan    text        NOT NULL CHECK (market_plan IN ('ZJ', 'MJ', 'ZK', 'N')),
    market_expr    text        NOT NULL,
    tag_id         text,
    create_time    timestamptz NOT NULL DEFAULT now(),
    update_time    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sku (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    goods_id       text          NOT NULL UNIQUE,
    source         text          NOT NULL,
    channel        text          NOT NULL,
    goods_name     text          NOT NULL,
    original_price numeric(12,2) NOT NULL CHECK (original_price >= 0),
    create_time    timestamptz   NOT NULL DEFAULT now(),
    update_time    timestamptz   NOT NULL DEFAULT now()
);

CREATE TABLE group_buy_activity (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    activity_id      bigint      NOT NULL UNIQUE,
    activity_name    text        NOT NULL,
    discount_id      text        NOT NULL REFERENCES group_buy_discount (discount_id),
    group_type       smallint    NOT NULL DEFAULT 0 CHECK (group_type IN (0, 1)),
    take_limit_count integer     NOT NULL DEFAULT 1 CHECK (take_limit_count >= 1),
    target           integer     NOT NULL DEFAULT 1 CHECK (target >= 1),
    valid_time       integer     NOT NULL DEFAULT 15 CHECK (valid_time >= 1),
    status           smallint    NOT NULL DEFAULT 0 CHECK (status IN (0, 1, 2, 3)),
    start_time       timestamptz NOT NULL,
    end_time         timestamptz NOT NULL,
    tag_id           text,
    tag_scope        text,
    create_time      timestamptz NOT NULL DEFAULT now(),
    update_time      timestamptz NOT NULL DEFAULT now(),
    CHECK (end_time > start_time)
);

CREATE TABLE sc_sku_activity (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      text        NOT NULL,
    channel     text        NOT NULL,
    goods_id    text        NOT NULL REFERENCES sku (goods_id),
    activity_id bigint      NOT NULL REFERENCES group_buy_activity (activity_id) ON DELETE CASCADE,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, channel, goods_id)
);
CREATE INDEX sc_sku_activity_activity_idx ON sc_sku_activity (activity_id);

-- One row per team.
CREATE TABLE group_buy_order (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    team_id          text          NOT NULL UNIQUE,
    activity_id      bigint        NOT NULL REFERENCES group_buy_activity (activity_id),
    source           text          NOT NULL,
    channel          text          NOT NULL,
    original_price   numeric(12,2) NOT NULL,
    deduction_price  numeric(12,2) NOT NULL,
    pay_price        numeric(12,2) NOT NULL,
    target_count     integer       NOT NULL CHECK (target_count >= 1),
    complete_count   integer       NOT NULL DEFAULT 0,
    lock_count       integer       NOT NULL DEFAULT 1,
    status           smallint      NOT NULL DEFAULT 0 CHECK (status IN (0, 1, 2)),
    valid_start_time timestamptz   NOT NULL,
    valid_end_time   timestamptz   NOT NULL,
    notify_url       text          NOT NULL,
    create_time      timestamptz   NOT NULL DEFAULT now(),
    update_time      timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT team_lock_count_within_target CHECK (lock_count BETWEEN 0 AND target_count),
    CONSTRAINT team_complete_count_within_locks CHECK (complete_count BETWEEN 0 AND lock_count),
    CONSTRAINT team_complete_means_full CHECK (status <> 1 OR complete_count = target_count)
);
CREATE INDEX group_buy_order_activity_idx ON group_buy_order (activity_id, status);
CREATE INDEX group_buy_order_forming_idx ON group_buy_order (valid_end_time) WHERE status = 0;

CREATE SEQUENCE member_order_id_seq START WITH 100000000001 MAXVALUE 999999999999;

-- One row per member order.
CREATE TABLE group_buy_order_list (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         text          NOT NULL,
    team_id         text          NOT NULL REFERENCES group_buy_order (team_id),
    order_id        text          NOT NULL UNIQUE
                    DEFAULT nextval('member_order_id_seq')::text,
    activity_id     bigint        NOT NULL,
    start_time      timestamptz   NOT NULL,
    end_time        timestamptz   NOT NULL,
    goods_id        text          NOT NULL,
    source          text          NOT NULL,
    channel         text          NOT NULL,
    original_price  numeric(12,2) NOT NULL,
    deduction_price numeric(12,2) NOT NULL,
    pay_price       numeric(12,2) NOT NULL,
    status          smallint      NOT NULL DEFAULT 0 CHECK (status IN (0, 1, 2)),
    out_trade_no    text          NOT NULL,
    out_trade_time  timestamptz,
    -- "{activityId}_{userId}_{n}", n in 1..take_limit_count: the unique index caps takes.
    biz_id          text          NOT NULL,
    -- Whether settling this order completed its team; replays answer the same.
    completed_team  boolean       NOT NULL DEFAULT false,
    create_time     timestamptz   NOT NULL DEFAULT now(),
    update_time     timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT order_list_biz_id_key UNIQUE (biz_id),
    CONSTRAINT order_list_out_trade_no_key UNIQUE (source, channel, out_trade_no)
);
CREATE INDEX group_buy_order_list_team_idx ON group_buy_order_list (team_id);
CREATE INDEX group_buy_order_list_user_idx ON group_buy_order_list (activity_id, user_id);
