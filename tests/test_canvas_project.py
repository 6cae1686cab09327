"""The canvas of a project written for Celery (tests/celery_project/demoapp/canvas_tasks.py, and
the calls below as Celery's canvas guide makes them), run by the project's real worker."""

from __future__ import annotations

import pytest

from djqueue import chain, chord, group
from djqueue.exceptions import ChordError, IncompleteStream
from djqueue.result import GroupResult

from .celery_project_support import project_worker  # noqa: F401 - a fixture
from .conftest import executions, wait_until

from demoapp.canvas_tasks import A, error_handler, fan_out, tsum  # noqa: E402 - on sys.path now
from demoapp.tasks import add, fail, mul, xsum  # noqa: E402

CANVAS = {"CELERY_IMPORTS": ["demoapp.canvas_tasks"]}


def test_chains_groups_chords_and_maps(project_worker) -> None:  # noqa: F811
    project_worker("-c", "2", settings=CANVAS)
    res = (add.s(2, 2) | add.s(4) | add.s(8))()
    assert res.get(timeout=30) == 16
    assert res.parent.get(timeout=30) == 8 and res.parent.parent.get(timeout=30) == 4
    assert chain(add.s(4, 4), mul.s(8), mul.s(10))().get(timeout=30) == 640
    assert group(add.s(i, i) for i in range(10))().get(timeout=30) == list(range(0, 20, 2))
    assert chord(add.s(i, i) for i in range(100))(tsum.s()).get(timeout=30) == 9900
    assert (group(add.s(i, i) for i in range(10)) | tsum.s())().get(timeout=30) == 90
    piped = (add.s(1, 1) | group(mul.s(i) for i in range(3)) | xsum.s()).delay()
    assert piped.get(timeout=30) == 0 + 2 + 4
    of_chords = chord([chord([add.s(1, 1), add.s(2, 2)], tsum.s()),
                       chord([add.s(3, 3)], tsum.s())], tsum.s())()
    assert of_chords.get(timeout=30) == 12
    chunked = add.chunks(zip(range(100), range(100)), 10)()
    assert chunked.get(timeout=30) == [[2 * i for i in range(k, k + 10)] for k in range(0, 100, 10)]
    assert tsum.map([list(range(10)), list(range(100))]).delay().get(timeout=30) == [45, 4950]
    assert add.starmap(zip(range(10), range(10))).delay().get(timeout=30) == list(range(0, 20, 2))


def test_links_and_a_failing_chord_member(project_worker, record_file) -> None:  # noqa: F811
    project_worker("-c", "2", settings=CANVAS)
    linked = add.apply_async((2, 2), link=add.s(16))
    sig = add.s(1, 1)
    sig.link(mul.s(10))
    by_method = sig.delay()
    failed = fail.apply_async(("boom",), link_error=error_handler.s())
    failed_too = fail.s("again").on_error(error_handler.s()).delay()  # sends fail, as Celery's
    body = tsum.s()
    body.on_error(error_handler.s())
    broken = chord([add.s(4, 4), fail.s("member"), add.s(8, 8)], body).apply_async()
    assert linked.get(timeout=30) == 4 and linked.children[0].get(timeout=30) == 20
    assert by_method.get(timeout=30) == 2 and by_method.children[0].get(timeout=30) == 20
    with pytest.raises(ChordError, match="raised ValueError"):
        broken.get(timeout=30)
    assert tsum.AsyncResult(broken.id).failed()  # the body did not run: it failed
    for result in (failed, failed_too):
        with pytest.raises(ValueError):
            result.get(timeout=30)
    expected = {f"error:{failed.id}:ValueError", f"error:{failed_too.id}:ValueError",
                f"error:{broken.id}:ChordError"}
    wait_until(lambda: expected <= set(executions(record_file)), timeout=30,
               what=f"error callbacks {expected}")
    assert set(executions(record_file).values()) == {1}


def test_replace_children_collect_and_saved_groups(project_worker) -> None:  # noqa: F811
    project_worker("-c", "2", settings=CANVAS)
    replaced = (fan_out.s(3) | tsum.s()).delay()
    assert replaced.get(timeout=30) == 0 + 2 + 4
    assert replaced.parent.get(timeout=30) == [0, 2, 4]  # the replaced task's id
    assert replaced.parent.children == [replaced]
    later = A.apply_async((4,), countdown=3600)
    with pytest.raises(IncompleteStream):
        list(later.iterdeps())  # not finished: its children are not known yet
    assert [node for _, node in later.iterdeps(intermediate=True)] == [later]
    later.revoke()
    result = A.delay(4)
    leaves = [value for child, value in result.collect() if not child.children]
    assert leaves == [0, 1, 4, 9]
    sent, = result.children
    assert isinstance(sent, GroupResult) and len(sent) == 4
    saved = group(add.s(1, 1), add.s(2, 2))()
    saved.save()
    restored = GroupResult.restore(saved.id)
    assert [r.id for r in restored] == [r.id for r in saved] and restored.get(timeout=30) == [2, 4]
    restored.delete()
    assert GroupResult.restore(saved.id) is None
