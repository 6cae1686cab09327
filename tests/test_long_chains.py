"""Chains longer than a message carries (``SEGMENT_STEPS``): the steps past the first ones wait in
segment rows, read where the chain reaches them and deleted in the round that writes the step
planned from them; on every database, with the in-process worker."""

from __future__ import annotations

import json

import pytest

from djqueue import states
from djqueue.canvas import chain, chord
from djqueue.client.launch import SEGMENT, SEGMENT_STEPS
from djqueue.models import ChainSegment, Chord, Message, TaskResult
from djqueue.worker.loop import Worker

from . import workflow_tasks as wf
from .test_broker import worker  # noqa: F401 - a fixture
from .test_workflow import run_all as drain

pytestmark = pytest.mark.django_db(transaction=True)


def run_all(worker: Worker) -> int:
    """Loop until no message is left; the most steps any message carried on the way."""
    longest = 0

    def look() -> None:
        nonlocal longest
        longest = max([longest, *(len(json.loads(body).get("chain") or ())
                                  for body in Message.objects.values_list("body", flat=True))])

    drain(worker, loops=5_000, before_each=look)
    return longest


def test_a_long_chain_carries_its_next_steps_and_runs_to_its_end(worker: Worker) -> None:
    steps = 2 * SEGMENT_STEPS + 50
    result = chain(wf.add.s(0, 0), *[wf.add.s(1)] * (steps - 1)).apply_async()
    first, = Message.objects.all()
    stack = json.loads(first.body)["chain"]
    assert len(stack) == SEGMENT_STEPS + 1 and stack[0]["subtask_type"] == SEGMENT
    assert ChainSegment.objects.count() == 2  # 149 steps more: 100 and 49
    assert run_all(worker) == SEGMENT_STEPS + 1
    assert result.get(timeout=1) == steps - 1
    assert TaskResult.objects.filter(task_name="wf.add", state=states.SUCCESS).count() == steps
    node, depth = result, 1  # every step's result is linked to the one before it
    while node.parent is not None:
        node, depth = node.parent, depth + 1
    assert depth == steps and node.get(timeout=1) == 0
    assert not ChainSegment.objects.exists()


def test_a_failed_step_fails_the_steps_of_every_segment(worker: Worker) -> None:
    """As a short chain's: the steps after the failed one never run and their results are
    FAILURE, here down to the last step of the last segment, which are then deleted."""
    steps = [wf.add.s(1, 1), wf.boom.s(), *[wf.add.s(1)] * (SEGMENT_STEPS + 30)]
    result = chain(*steps).apply_async()
    run_all(worker)
    with pytest.raises(wf.Boom):
        result.get(timeout=1)
    failed = TaskResult.objects.filter(state=states.FAILURE)
    assert failed.count() == len(steps) - 1
    assert TaskResult.objects.filter(task_name="wf.add", state=states.SUCCESS).count() == 1
    assert not ChainSegment.objects.exists()


def test_long_chains_in_chords(worker: Worker) -> None:
    """A long chain as a chord's member (its last step, in a segment, counts the chord down)
    and as its body (planned by the round that takes the count to zero)."""
    long = SEGMENT_STEPS + 20
    member = chain(wf.add.s(0, 0), *[wf.add.s(1)] * (long - 1))
    body = chain(wf.xsum.s(), *[wf.add.s(1)] * (long - 1))
    result = chord([member, wf.add.s(2, 3)], body).apply_async()
    assert ChainSegment.objects.count() == 1  # the member's: the body's is written later
    assert run_all(worker) == SEGMENT_STEPS + 1
    assert result.get(timeout=1) == (long - 1) + 5 + (long - 1)
    assert not ChainSegment.objects.exists() and not Chord.objects.exists()


def test_a_segment_gone_ends_the_chain_with_an_error(worker: Worker, caplog) -> None:
    result = chain(wf.add.s(0, 0), *[wf.add.s(1)] * (SEGMENT_STEPS + 10)).apply_async()
    gone, = ChainSegment.objects.values_list("id", flat=True)
    ChainSegment.objects.all().delete()
    run_all(worker)
    assert TaskResult.objects.filter(task_name="wf.add").count() == SEGMENT_STEPS + 1
    assert not result.ready()
    assert f"Chain segment {gone} is not in the database (deleted?)" in caplog.text
