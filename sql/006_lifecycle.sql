-- The rest of a team's life: unpaid locks time out (closed), paid orders are refunded, teams
-- fail with their paid members to refund, and complete teams may see refunds.
--
--   order (group_buy_order_list): 0 locked -> 1 paid -> 3 refunded;  0 locked -> 2 closed
--   team  (group_buy_order):      0 forming -> 1 complete -> 3 complete with refunds;
--                                 0 forming -> 2 failed
--
-- The service moves rows only with conditional statements; the checks and triggers below make
-- PostgreSQL refuse anything else, whoever writes.

-- How long a locked order may stay unpaid, per activity.
ALTER TABLE group_buy_activity
    ADD COLUMN pay_timeout_seconds integer NOT NULL DEFAULT 900
        CONSTRAINT activity_pay_timeout_positive CHECK (pay_timeout_seconds >= 1);

ALTER TABLE group_buy_order_list
    DROP CONSTRAINT group_buy_order_list_status_check,
    ADD CONSTRAINT order_status_known CHECK (status IN (0, 1, 2, 3)),
    -- A closed or refunded order gives its numbered take key back (NULLs are distinct).
    ALTER COLUMN biz_id DROP NOT NULL,
    -- When a locked order is closed unless paid: lock time + the activity's payTimeoutSeconds,
    -- never after its team's window ends (a team that cannot complete takes no payment).
    ADD COLUMN pay_deadline timestamptz,
    -- How a closed (2) or refunded (3) order was given back: a refund answers it again.
    ADD COLUMN refund_type text;

-- Locks already waiting for payment get the default timeout (900 s) from their lock time;
-- no order was ever closed before (status 2 was unused), but one would give its key back.
UPDATE group_buy_order_list SET biz_id = NULL WHERE status = 2;
UPDATE group_buy_order_list o
SET pay_deadline = least(o.create_time + interval '900 seconds', t.valid_end_time)
FROM group_buy_order t
WHERE t.team_id = o.team_id AND o.status = 0;

ALTER TABLE group_buy_order_list
    -- The lock sets it from its activity and team; a row written any other way (an import, a
    -- fixture) gets the default timeout.
    ALTER COLUMN pay_deadline SET DEFAULT now() + interval '900 seconds',
    ADD CONSTRAINT order_unpaid_has_deadline CHECK (status <> 0 OR pay_deadline IS NOT NULL),
    ADD CONSTRAINT order_take_key_while_live CHECK ((biz_id IS NULL) = (status IN (2, 3))),
    ADD CONSTRAINT order_refund_type_fits_status CHECK (
        CASE status
            WHEN 3 THEN refund_type IN ('paid', 'paid_team')
            WHEN 2 THEN refund_type IS NULL OR refund_type = 'unpaid'
            ELSE refund_type IS NULL
        END);

-- The close cron's queue: only the unpaid locks are in it.
CREATE INDEX order_list_unpaid_deadline_idx ON group_buy_order_list (pay_deadline)
    WHERE status = 0;

-- A complete team keeps its counts when members refund (status 3), so it stays full.
ALTER TABLE group_buy_order
    DROP CONSTRAINT group_buy_order_status_check,
    ADD CONSTRAINT team_status_known CHECK (status IN (0, 1, 2, 3)),
    DROP CONSTRAINT team_complete_means_full,
    ADD CONSTRAINT team_complete_means_full
        CHECK (status NOT IN (1, 3) OR complete_count = target_count);

-- Only the lifecycle's transitions, and a team's counts change only while it is forming.
-- The WHEN conditions are evaluated inline: the function runs only to refuse.
CREATE FUNCTION refuse_lifecycle_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'status % to % (or counts of a team no longer forming) is not a lifecycle change',
        OLD.status, NEW.status
        USING ERRCODE = 'check_violation', CONSTRAINT = TG_ARGV[0];
END
$$;

CREATE TRIGGER order_status_transition
    BEFORE UPDATE OF status ON group_buy_order_list
    FOR EACH ROW
    WHEN (OLD.status <> NEW.status
          AND (OLD.status, NEW.status) NOT IN ((0, 1), (0, 2), (1, 3)))
    EXECUTE FUNCTION refuse_lifecycle_change('order_status_transition');

CREATE TRIGGER team_status_transition
    BEFORE UPDATE OF status, lock_count, complete_count ON group_buy_order
    FOR EACH ROW
    WHEN ((OLD.status <> NEW.status
           AND (OLD.status, NEW.status) NOT IN ((0, 1), (0, 2), (1, 3)))
          OR (OLD.status <> 0 AND (OLD.lock_count, OLD.complete_count)
                                  IS DISTINCT FROM (NEW.lock_count, NEW.complete_count)))
    EXECUTE FUNCTION refuse_lifecycle_change('team_status_transition');

-- Teams that failed before this migration, with payments nobody was told to refund: the
-- worker writes each one's team.failed event once (the events' bodies are the service's).
CREATE TABLE team_failed_unannounced (
    team_id text PRIMARY KEY REFERENCES group_buy_order (team_id)
);
INSERT INTO team_failed_unannounced (team_id)
SELECT t.team_id FROM group_buy_order t
WHERE t.status = 2
  AND EXISTS (SELECT 1 FROM group_buy_order_list o WHERE o.team_id = t.team_id AND o.status = 1);
