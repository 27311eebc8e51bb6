"""Statements on a team row that lock, settle and refunds share, and the close of a locked
order that gives its slot back with them. (In the schema a team is a `group_buy_order` row.)"""

# The row is found by its unique team_id alone: left to choose, the planner may scan an
# activity's forming teams instead (it did, with fresh statistics, at 2000 teams).
THE_TEAM = "id = (SELECT id FROM group_buy_order WHERE team_id = $1)"

# A locked order of a failed team: closed; the failed team keeps its counts.
CLOSE_LOCKED = """
UPDATE group_buy_order_list SET status = 2, biz_id = NULL, refund_type = $2, update_time = now()
WHERE order_id = $1 AND status = 0
"""

# A forming team gives a slot back (and the paid count, $2 = 1 for a paid order); a team
# in any other status keeps its counts and no row comes back.
GIVE_BACK_SLOT = f"""
UPDATE group_buy_order
SET lock_count = lock_count - 1, complete_count = complete_count - $2, update_time = now()
WHERE {THE_TEAM} AND status = 0
RETURNING status
"""
