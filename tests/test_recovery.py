"""Recovery of dead workers' messages is safe when several workers attempt it at once."""

from __future__ import annotations

import datetime
import threading

import pytest
from django.db import connections
from django.utils import timezone

from djqueue.broker import operations
from djqueue.broker.rows import Lost
from djqueue.models import Message
from tasks import add

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_recovery_settles_each_message_once() -> None:
    for i in range(40):
        add.delay(i, i)
    expired = timezone.now() - datetime.timedelta(seconds=5)
    ids = list(Message.objects.order_by("id").values_list("id", flat=True))
    Message.objects.filter(id__in=ids[:10]).update(state="reserved", lease_until=expired, owner=99)
    Message.objects.filter(id__in=ids[10:20]).update(state="started", lease_until=expired,
                                                     owner=99, acks_late=True)
    Message.objects.filter(id__in=ids[20:30]).update(state="started", lease_until=expired, owner=99)
    alive = timezone.now() + datetime.timedelta(minutes=5)
    Message.objects.filter(id__in=ids[30:]).update(state="started", lease_until=alive, owner=7)

    lost: list[Lost] = []
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def recover() -> None:
        try:
            barrier.wait()
            lost.extend(operations("default").recover_expired_leases())
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=recover) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    states = dict(Message.objects.values_list("id", "state"))
    assert [states[i] for i in ids[:20]] == ["ready"] * 20
    assert [states[i] for i in ids[20:30]] == ["rejected"] * 10
    assert [states[i] for i in ids[30:]] == ["started"] * 10  # a live lease is left alone
    assert len(lost) == 10 and len({message.task_id for message in lost}) == 10


def test_a_late_ack_from_the_old_holder_does_not_touch_a_recovered_message() -> None:
    result = add.delay(1, 1)
    [old] = operations("default").claim(["celery"], 10, "old@host", 1, lease_seconds=-1)
    operations("default").recover_expired_leases()  # the lease ran out: back to ready
    [new] = operations("default").claim(["celery"], 10, "new@host", 2, lease_seconds=60)
    assert old.id == new.id
    operations("default").ack([old.id], owner=1)  # the old holder wakes up and acknowledges
    message = Message.objects.get(task_id=result.id)
    assert (message.state, message.owner) == ("reserved", 2)
    operations("default").ack([new.id], owner=2)
    assert not Message.objects.exists()
