-- One "give the money back" fact per paid order, and one defined count for a failed team.
--
-- A paid order of a failed team is listed in its team.failed event: that is its refund
-- instruction. Recording its refund afterwards marks it refunded with refund_type
-- 'failed_team' and writes no order.refunded (which would ask for the money a second time).
ALTER TABLE group_buy_order_list
    DROP CONSTRAINT order_refund_type_fits_status,
    ADD CONSTRAINT order_refund_type_fits_status CHECK (
        CASE status
            WHEN 3 THEN refund_type IN ('paid', 'paid_team', 'failed_team')
            WHEN 2 THEN refund_type IS NULL OR refund_type = 'unpaid'
            ELSE refund_type IS NULL
        END);

-- A failed team's counts are its payments when it failed (the orders its team.failed lists):
-- lock_count = complete_count, whether its unpaid locks were closed before the failure or
-- after. Teams failed before this migration kept their unpaid locks in lock_count; they are
-- set the same way (the lifecycle trigger refuses count changes of a failed team, so it is
-- switched off for this one statement, inside the migration's transaction).
ALTER TABLE group_buy_order DISABLE TRIGGER team_status_transition;
UPDATE group_buy_order SET lock_count = complete_count
WHERE status = 2 AND lock_count <> complete_count;
ALTER TABLE group_buy_order ENABLE TRIGGER team_status_transition;

ALTER TABLE group_buy_order
    ADD CONSTRAINT team_failed_counts_its_payments CHECK (status <> 2 OR lock_count = complete_count);
