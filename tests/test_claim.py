"""The claim across several queues and the idle worker's next-due question, on the real database."""

from __future__ import annotations

import pytest

from djqueue import broker
from tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


def test_claim_over_several_queues_keeps_priority_then_age_and_the_limit() -> None:
    low = [add.apply_async((i, i), queue="a").id for i in range(3)]
    high = [add.apply_async((i, i), queue="b", priority=5).id for i in range(2)]
    add.apply_async((0, 0), queue="elsewhere", priority=9)
    claimed = broker.claim("default", ["a", "b"], 3, "test@host", None, 60)
    assert [m.task_id for m in claimed] == [*high, low[0]]
    rest = broker.claim("default", ["a", "b"], 10, "test@host", None, 60)
    assert [m.task_id for m in rest] == low[1:]


def test_next_due_is_the_earliest_delayed_message_of_those_queues() -> None:
    assert broker.next_due("default", ["celery"]) is None
    add.apply_async((1, 1))  # due now: not a delayed message
    add.apply_async((1, 1), countdown=300)
    add.apply_async((1, 1), countdown=60)
    add.apply_async((1, 1), countdown=5, queue="other")
    assert 55 < broker.next_due("default", ["celery"]) < 61  # julianday arithmetic is not exact
    assert 0 < broker.next_due("default", ["celery", "other"]) < 6
