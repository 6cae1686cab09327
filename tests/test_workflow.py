"""Canvas workflows: chains, chords, callbacks, chunks/map/starmap, replace, ResultSet and saved
groups; built and sent against the real database and run by the in-process worker (solo pool),
and run eagerly."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import djqueue
from djqueue import states
from djqueue.canvas import Signature, chain, chord, chunks, group, signature, xmap, xstarmap
from djqueue.client.base import app
from djqueue.client.result_graph import CHILDREN_TASK
from djqueue.exceptions import ChordError, IncompleteStream, ResultBackendNotConfigured
from djqueue.models import Chord, Message, TaskResult
from djqueue.result import AsyncResult, GroupResult, ResultSet, result_from_tuple
from djqueue.broker import operations
from djqueue.worker import heartbeat
from djqueue.worker.loop import Worker

from . import workflow_tasks as wf
from .test_broker import statements, worker  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db(transaction=True)


def run_all(worker: Worker, loops: int = 500,
            before_each: Callable[[], object] | None = None) -> None:
    """Loop until no message is left (``before_each``: called before each iteration)."""
    for _ in range(loops):
        if before_each is not None:
            before_each()
        worker.loop()
        if not Message.objects.filter(available_at__lte=timezone.now()).exists():
            worker.loop()  # the last outcomes' round
            if not Message.objects.exists():
                return
    raise AssertionError(f"the worker did not drain the queue: {list(Message.objects.all())}")


def bodies() -> list[dict]:
    return [json.loads(m.body) for m in Message.objects.order_by("id")]


def test_building_and_dict_form() -> None:
    a, b, c = wf.add.s(1, 1), wf.mul.s(2), wf.add.si(3, 3)
    assert isinstance(a | b, chain) and [t.task for t in (a | b | c).tasks] == ["wf.add", "wf.mul", "wf.add"]
    assert len(((a | b) | (b | c)).tasks) == 4  # chains flatten
    g = group(wf.add.s(i, i) for i in range(3))
    made = g | wf.xsum.s()
    assert isinstance(made, chord) and made.body.task == "wf.xsum" and len(made.tasks) == 3
    steps = chain(a, g, wf.xsum.s(), b).steps()  # a group followed by a step is a chord
    assert [type(s).__name__ for s in steps] == ["Signature", "chord", "Signature"]
    nested = chord([chord([a, b], wf.xsum.s()), group(a, c)], wf.xsum.s())
    assert len(nested.header_tasks()) == 3  # the inner group is flattened into the header
    for canvas in (a | b | c, made, nested, g, wf.add.s(1).set(countdown=3)):
        data = json.loads(json.dumps(canvas.as_dict()))
        assert Signature.from_dict(data).as_dict() == canvas.as_dict()
        assert signature(data) == canvas
    linked = wf.add.s(1, 1)
    linked.link(wf.mul.s(2))
    linked.on_error(wf.on_error.s())
    assert [s.task for s in linked.options["link"]] == ["wf.mul"]
    assert linked.clone().options["link"] is not linked.options["link"]
    assert wf.add.s(2).clone((5,)).args == (5, 2)  # put first, as Celery's partials
    assert djqueue.chain is chain and djqueue.chord is chord and djqueue.ResultSet is ResultSet


def test_eager_apply_of_every_canvas() -> None:
    assert (wf.add.s(2, 2) | wf.mul.s(4) | wf.add.s(1)).apply().get() == 17
    result = chord([wf.add.s(i, i) for i in range(5)], wf.xsum.s()).apply()
    assert result.get() == 20 and result.parent.get() == [0, 2, 4, 6, 8]
    assert xmap(wf.identity.s(), [1, 2]).apply().get() == [1, 2]
    assert xstarmap(wf.add.s(), [(1, 2), (3, 4)]).apply().get() == [3, 7]
    assert wf.add.chunks(zip(range(5), range(5)), 2).apply().get() == [[0, 2], [4, 6], [8]]
    wf.ERRORS.clear()
    failed = wf.boom.apply((1,), link_error=[wf.on_error.s(), wf.on_error_old.s()])
    assert failed.failed() and [e[0] for e in wf.ERRORS] == [failed.id, failed.id]
    assert isinstance(wf.ERRORS[0][1], wf.Boom) and "Boom" in wf.ERRORS[0][2]
    linked = wf.add.apply((2, 3), link=wf.mul.s(10))
    assert linked.get() == 5
    assert wf.replaced.apply((1,)).get() == 101


def test_chain_runs_step_by_step_with_parent_and_root_ids(worker: Worker) -> None:
    result = (wf.add.s(2, 2) | wf.mul.s(4) | wf.add.s(1)).apply_async()
    assert Message.objects.count() == 1  # only the first step is written now
    first = bodies()[0]
    assert first["root_id"] == result.parent.parent.id and "parent_id" not in first
    assert [s["task"] for s in reversed(first["chain"])] == ["wf.mul", "wf.add"]
    run_all(worker)
    assert result.get(timeout=1) == 17
    assert result.parent.get(timeout=1) == 16 and result.parent.parent.get(timeout=1) == 4
    plain = wf.add.delay(1, 1)
    assert set(bodies()[0]) == {"args", "kwargs"}  # a plain task's message is unchanged
    run_all(worker)
    assert plain.get(timeout=1) == 2


def test_chord_runs_its_body_once_with_results_in_order(worker: Worker) -> None:
    result = chord(wf.add.s(i, i) for i in range(10))(wf.xsum.s())
    row = Chord.objects.get()
    assert row.pending == 10 and len(json.loads(row.members)) == 10
    assert {b["chord"] for b in bodies()} == {row.id} and sorted(b["group_index"] for b in bodies()) == list(range(10))
    run_all(worker)
    assert result.get(timeout=1) == 90 and not Chord.objects.exists()
    assert result.parent.get(timeout=1) == [i + i for i in range(10)]
    piped = (group(wf.mul.s(i, 2) for i in range(4)) | wf.xsum.s()).apply_async()
    in_chain = (wf.add.s(1, 1) | group(wf.mul.s(i) for i in range(3)) | wf.xsum.s()
                | wf.mul.s(10)).apply_async()
    of_chords = chord([chord([wf.add.s(1, 1), wf.add.s(2, 2)], wf.xsum.s()),
                       chord([wf.add.s(3, 3)], wf.xsum.s()), wf.add.s(0, 1)], wf.xsum.s()).apply_async()
    empty = chord([], wf.xsum.s()).apply_async()
    run_all(worker)
    assert piped.get(timeout=1) == 12 and in_chain.get(timeout=1) == (0 + 2 + 4) * 10
    assert of_chords.get(timeout=1) == 6 + 6 + 1 and empty.get(timeout=1) == 0
    assert not Chord.objects.exists()


def test_a_failed_member_fails_the_body_with_chord_error(worker: Worker) -> None:
    wf.ERRORS.clear()
    body = wf.xsum.s()
    body.link_error(wf.on_error.s())
    result = chord([wf.add.s(1, 1), wf.boom.s(7), wf.add.s(2, 2)], body).apply_async()
    culprit = json.loads(Chord.objects.get().members)[1]
    then = (wf.boom.s(1) | wf.add.s(1) | wf.add.s(2)).apply_async()
    run_all(worker)
    with pytest.raises(ChordError, match=f"Dependency {culprit} raised Boom"):
        result.get(timeout=1)
    assert result.state == states.FAILURE and not Chord.objects.exists()
    assert not TaskResult.objects.filter(task_name="wf.xsum", state=states.SUCCESS).exists()
    errbacks = [e for e in wf.ERRORS if e[0] == result.id]
    assert len(errbacks) == 1 and isinstance(errbacks[0][1], ChordError)
    # A failed step fails the rest of its chain (as Celery's), which never runs.
    assert then.state == states.FAILURE and then.parent.state == states.FAILURE
    assert isinstance(then.result, wf.Boom)


def test_link_and_link_error_are_written_with_the_result(worker: Worker) -> None:
    wf.ERRORS.clear()
    done = wf.add.apply_async((2, 3), link=wf.mul.s(10))
    failed = wf.boom.apply_async((1,), link_error=[wf.on_error.s(), wf.on_error_old.s()])
    sig = wf.boom.s(2)
    sig.on_error(wf.on_error.s())
    also = sig.delay()
    by_name = app.send_task("wf.add", (1, 1), link=wf.mul.si(3, 3))
    run_all(worker)
    assert done.get(timeout=1) == 5
    products = sorted(TaskResult.objects.filter(task_name="wf.mul").values_list("result", flat=True))
    assert products == ["50", "9"]
    assert sorted(e[0] for e in wf.ERRORS) == sorted([failed.id, failed.id, also.id])
    new_style = [e for e in wf.ERRORS if e[0] == failed.id and e[2]]
    assert isinstance(new_style[0][1], wf.Boom) and "Boom" in new_style[0][2]
    assert by_name.get(timeout=1) == 2


def test_chunks_map_starmap_and_replace(worker: Worker) -> None:
    chunked = wf.add.chunks(zip(range(10), range(10)), 4).apply_async()
    mapped = wf.identity.map([1, 2, 3]).apply_async()
    starred = wf.add.starmap([(1, 1), (2, 2)]).apply_async()
    replaced = (wf.replaced.s(5) | wf.mul.s(2)).apply_async()
    run_all(worker)
    assert chunked.get(timeout=1) == [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18]]
    assert mapped.get(timeout=1) == [1, 2, 3] and starred.get(timeout=1) == [2, 4]
    assert replaced.parent.get(timeout=1) == 105  # the replacement took over its id
    assert replaced.get(timeout=1) == 210


def test_replace_with_a_group_feeds_what_followed(worker: Worker) -> None:
    """As Celery's: the group becomes a chord whose body takes over the replaced task's id and
    returns the group's results to the rest of the chain, a chord it was a member of included."""
    then = (wf.fanned.s(10) | wf.xsum.s() | wf.mul.s(2)).apply_async()
    alone = wf.fanned.delay(1, 2)
    member = chord([wf.fanned.s(5, 2), wf.add.s(1, 1)], wf.identity.s()).apply_async()
    ending = (wf.fanned_after.s(1) | wf.xsum.s()).apply_async()
    run_all(worker)
    assert ending.parent.get(timeout=1) == [4, 6] and ending.get(timeout=1) == 10
    assert then.parent.parent.get(timeout=1) == [10, 11, 12]  # the replaced task's id
    assert then.get(timeout=1) == 66 and alone.get(timeout=1) == [1, 2]
    assert member.get(timeout=1) == [[5, 6], 2] and not Chord.objects.exists()
    assert TaskResult.objects.filter(task_name="wf.add").count() == 3 + 2 + 2 + 1 + 1
    # The replaced task stored nothing of its own: its id holds the chord body's result.
    assert TaskResult.objects.get(task_id=alone.id).task_name == "celery.accumulate"


def test_children_and_collect_follow_the_workflow(worker: Worker) -> None:
    chained = (wf.add.s(1, 1) | group(wf.mul.s(i) for i in range(2)) | wf.xsum.s()
               | wf.mul.s(3)).apply_async()
    first = chained.parent.parent
    linked = wf.add.apply_async((2, 2), link=[wf.mul.s(2), wf.mul.s(3)])
    single = wf.add.apply_async((1, 2), link=wf.mul.s(2))
    ignored = wf.add.apply_async((1, 1), link=wf.mul.s(2), ignore_result=True)
    with pytest.raises(IncompleteStream):
        list(first.iterdeps())
    assert first.children is None  # not finished: not known yet
    assert [node for _, node in first.iterdeps(intermediate=True)] == [first]
    run_all(worker)
    assert first.children == [chained.parent]
    assert isinstance(first.children[0].parent, GroupResult)  # the chord's header
    collected = [(node.id, value) for node, value in first.collect()]
    assert collected == [(first.id, 2), (chained.parent.id, 2), (chained.id, 6)]
    assert chained.children == [] and wf.add.delay(0, 0).children is None
    group_child, = linked.children
    assert isinstance(group_child, GroupResult) and group_child.get(timeout=1) == [8, 12]
    assert [value for _, value in linked.collect()] == [4, [8, 12], 8, 12]
    assert [r.get(timeout=1) for r in single.children] == [6]
    single.forget()
    assert ignored.children is None  # no result, no children (as Celery's)
    assert TaskResult.objects.filter(task_name=CHILDREN_TASK).count() == 3
    restored = result_from_tuple(json.loads(json.dumps(chained.as_tuple())))
    assert restored.parent.parent.id == first.id and restored.get(timeout=1) == 6


def test_what_a_task_sends_is_among_its_children(worker: Worker) -> None:
    """Celery's ``trail``: Celery's own collect() example, leaves picked by their children."""
    result = wf.spawner.apply_async((3,), link=wf.identity.s())
    run_all(worker)
    sent, linked = result.children
    assert isinstance(sent, GroupResult) and len(sent) == 3 and linked.get(timeout=1) == 3
    assert [value for node, value in result.collect() if not node.children] == [3, 0, 1, 4]
    assert sent.results[2].children[0].get(timeout=1) == 4
    assert TaskResult.objects.filter(task_name="wf.add").count() == 1  # not a child
    nested = TaskResult.objects.filter(task_name=CHILDREN_TASK).count()
    assert nested == 1 + 3  # the spawner's and each spawned's; a mul sent nothing


def test_result_set_and_saved_groups(worker: Worker) -> None:
    first, second = wf.add.delay(1, 1), wf.add.delay(2, 2)
    results = ResultSet([first])
    results.add(second)
    results.add(first)
    assert len(results) == 2 and not results.ready()
    run_all(worker)
    assert results.get(timeout=1) == [2, 4] and results.completed_count() == 2
    results.discard(first.id)
    assert results.results == [second]
    saved = GroupResult(None, [first, second])
    saved.save()
    restored = GroupResult.restore(saved.id)
    assert restored is not None and restored.id == saved.id
    assert [r.id for r in restored] == [first.id, second.id] and restored.get(timeout=1) == [2, 4]
    saved.delete()
    assert GroupResult.restore(saved.id) is None and GroupResult.restore(first.id) is None


def test_a_member_lost_with_its_worker_fails_the_chord(worker: Worker) -> None:
    """A chord member whose worker died while it ran (no acks_late: set aside by recovery) fails
    the chord in recovery's transaction: the body does not run, it fails, and nothing hangs."""
    result = chord([wf.add.s(1, 1), wf.add.s(2, 2)], wf.xsum.s()).apply_async()
    broker = operations("default")
    held = broker.claim(["celery"], 1, "gone@test", 999, 60)
    broker.start([m.id for m in held], owner=999, lease_seconds=60)
    Message.objects.filter(owner=999).update(lease_until=timezone.now() - datetime.timedelta(1))
    assert heartbeat.recover("default", app.backend.store, "json") == 1
    assert Chord.objects.get().pending == 1
    run_all_but_rejected(worker)
    with pytest.raises(ChordError, match=f"Dependency {held[0].task_id} raised WorkerLostError"):
        result.get(timeout=1)
    assert not Chord.objects.exists()


def run_all_but_rejected(worker: Worker) -> None:
    for _ in range(50):
        worker.loop()
        if not Message.objects.exclude(state="rejected").exists():
            return
    raise AssertionError("the worker did not drain the queue")


def one_statement_rounds() -> None:
    if not operations("default").one_statement_rounds:
        pytest.skip("rounds are transactions of a few statements on this database")


def test_a_chain_step_is_one_statement_where_rounds_are(worker: Worker) -> None:
    """The round that stores a step's result writes the next step started by this worker (a
    task it has run, its pool idle), and the pool takes it from the round's answer: one
    statement per step, no claim."""
    one_statement_rounds()
    wf.add.delay(0, 0)
    run_all(worker)  # the worker has run wf.add
    result = (wf.add.s(1, 1) | wf.add.s(2) | wf.add.s(3)).apply_async()
    worker.loop()  # claims and runs the first step
    for _ in range(2):
        with CaptureQueriesContext(connection) as captured:
            worker.loop()
        assert len(statements(captured)) == 1, statements(captured)
        message = Message.objects.get()  # the step the loop ran, held until the next round
        assert (message.state, message.owner) == ("started", worker.node_id)
    worker.loop()
    assert result.get(timeout=1) == 7 and not Message.objects.exists()


def test_a_waiting_message_goes_before_the_next_step(worker: Worker) -> None:
    """The next step is written started only if a claim would have taken it first: an older
    message of its queue and at least its priority runs before it."""
    one_statement_rounds()
    wf.add.delay(0, 0)
    run_all(worker)
    result = (wf.add.s(1, 1) | wf.add.s(2)).apply_async()
    worker.loop()  # runs the first step
    waiting = wf.add.delay(5, 5)
    worker.loop()  # the first step's round: its next step waits behind the older message
    assert Message.objects.get(task_id=waiting.id).state == "started"
    assert Message.objects.get(task_id=result.id).state in ("ready", "reserved")  # not run
    run_all(worker)
    assert waiting.get(timeout=1) == 10 and result.get(timeout=1) == 4


def test_a_chord_whose_row_is_gone_is_logged(worker: Worker, caplog) -> None:
    """A member of a chord whose row was deleted finishes; the chord's body is not run, and the
    worker says why (on PostgreSQL the round's count-down finds no row and the round is sent
    again as a transaction, which logs it)."""
    result = chord([wf.add.s(1, 1), wf.add.s(2, 2)], wf.xsum.s()).apply_async()
    Chord.objects.all().delete()
    run_all(worker)
    assert result.parent.get(timeout=1) == [2, 4]
    assert not TaskResult.objects.filter(task_id=result.id).exists()
    assert f"Chord {result.parent.id} is not in the database" in caplog.text


def test_a_chord_needs_a_result_backend(settings) -> None:
    settings.CELERY_RESULT_BACKEND = None
    with pytest.raises(ResultBackendNotConfigured):
        chord([wf.add.s(1, 1)], wf.xsum.s()).apply_async()
    assert not Message.objects.exists() and not Chord.objects.exists()
