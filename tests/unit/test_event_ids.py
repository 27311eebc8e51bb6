"""Event ids are UUID version 7: time-ordered, so the unique indexes on them take each new one
where the last ones went (issue 16)."""

import time
import uuid

from groupbuy_async.callbacks.events import new_event_id, new_event_ids


def test_event_ids_are_uuid7_and_ordered_by_time() -> None:
    first = new_event_id()
    time.sleep(0.002)
    later = [new_event_id() for _ in range(100)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in [first, *later])
    assert all(first < i for i in later)
    assert len(set(later)) == len(later)
    assert abs((first.int >> 80) - time.time_ns() // 1_000_000) < 5_000  # its milliseconds


def test_ids_made_together_are_uuid7_of_one_millisecond_and_distinct() -> None:
    ids = new_event_ids(1000)
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert len({i.int >> 80 for i in ids}) == 1
    assert len(set(ids)) == 1000
