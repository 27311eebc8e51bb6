-- The original project's table and column names stay (renaming them would break every
-- deployed database for no gain); the code calls them what they are. Said once, here, where
-- psql's \d+ shows it. (Comments only: nothing else changes.)

COMMENT ON TABLE group_buy_order IS
    'A team (the original''s name): one row per team, with its counts, status and window;'
    ' team_id is its public id.';

COMMENT ON TABLE group_buy_order_list IS
    'A member order (the original''s name): one row per order locked into a team (team_id),'
    ' paid, closed or refunded; order_id is its public id.';

COMMENT ON COLUMN group_buy_order_list.biz_id IS
    'The take key the order holds while live (locked or paid):'
    ' "{activityId}_{userId}_{n}", n in 1..take_limit_count, unique, so a user holds at most'
    ' take_limit_count live orders of an activity; NULL once closed or refunded.';
