"""Workflows on real workers (``manage.py celery worker``, prefork pool): chain, chord and its
failure, link/link_error, chunks/map/starmap and replace; and the workflow guarantees under
kill -9: a 250-step chain (its steps past the first 100 in segment rows) and a 1,000-member chord
while workers (main process and children) are killed and started again. Executions are counted from the lines the tasks write."""

from __future__ import annotations

import collections
import os
import random
import signal
import time

import pytest

from djqueue import states
from djqueue.canvas import chain, chord, group
from djqueue.exceptions import ChordError
from djqueue.models import ChainSegment, Chord, Message

from . import workflow_tasks as wf
from .conftest import wait_until
from .test_reliability import pool_children

IMPORTS = {"DJQUEUE_EXTRA_IMPORTS": "tests.fault_tasks,tests.workflow_tasks"}


def lines(record_file) -> list[list[str]]:
    return [line.split() for line in record_file.read_text().splitlines()]


def test_workflows_on_a_real_worker(start_worker, record_file) -> None:
    start_worker("-c", "2", env=IMPORTS)
    chained = (wf.add.s(2, 2) | wf.mul.s(4) | wf.add.s(1)).apply_async()
    summed = chord(wf.add.s(i, i) for i in range(20))(wf.xsum.s())
    body = wf.xsum.s()
    body.link_error(wf.on_error.s())
    broken = chord([wf.add.s(1, 1), wf.boom.s(1)], body).apply_async()
    linked = wf.add.apply_async((2, 3), link=wf.noted.s("linked"),
                                link_error=wf.on_error_old.s())
    failed = wf.boom.apply_async((5,), link_error=[wf.on_error.s(), wf.on_error_old.s()])
    chunked = wf.add.chunks(zip(range(6), range(6)), 4).apply_async()
    mapped = wf.identity.map([1, 2]).apply_async()
    starred = wf.add.starmap([(1, 2)]).apply_async()
    replaced = (wf.replaced.s(1) | wf.mul.s(2)).apply_async()
    assert chained.get(timeout=30) == 17 and summed.get(timeout=30) == 380
    with pytest.raises(ChordError):
        broken.get(timeout=30)
    assert linked.get(timeout=30) == 5
    assert chunked.get(timeout=30) == [[0, 2, 4, 6], [8, 10]]
    assert mapped.get(timeout=30) == [1, 2] and starred.get(timeout=30) == [3]
    assert replaced.get(timeout=30) == 202
    with pytest.raises(wf.Boom):
        failed.get(timeout=30)
    expected = {"linked:5", f"errback:{broken.id}:ChordError", f"errback:{failed.id}:Boom",
                f"olderrback:{failed.id}"}
    wait_until(lambda: expected <= {line[0] for line in lines(record_file)}, timeout=30,
               what=f"callbacks and errbacks {expected}")
    assert not Chord.objects.exists()


CHAIN_STEPS, CHORD_MEMBERS = 250, 1000


def left() -> str:
    """What is left in the database, for a failure's message."""
    chords = list(Chord.objects.values_list("pending", "failure"))
    messages = collections.Counter(Message.objects.values_list("task_name", "state", "error"))
    return f"chords {chords}, messages {dict(messages)}"


def test_chain_and_chord_under_kill_9(start_worker, record_file, fault_report) -> None:
    """Workers are killed with SIGKILL (the whole worker, or one pool child) and started again
    while a 250-step chain and a 1,000-member chord (acks_late tasks) run. Each chain step must
    be written once: every run of step k received the same value, from a run of step k - 1;
    every chord member must run, and the body exactly once, with the 1,000 results in order.
    A step written twice (outside the transaction of its predecessor's result) would show up as
    two different values received by one step; a lost count-down as a body that never runs."""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    env = {**IMPORTS, "DJQUEUE_WORKER_LOST_TIMEOUT": "2"}
    workers = [start_worker("-c", "2", "-n", f"w{i}@%h", env=env, ready=False) for i in range(2)]
    for worker in workers:
        worker.wait_for(" ready.", timeout=60)
    # Naps long enough for several kills: a chain step is one round on PostgreSQL now, and the
    # whole run ended after two kills with 10 ms steps and 2 ms members.
    steps = [wf.step.s(k, 0.03) for k in range(CHAIN_STEPS)]
    walked = chain(wf.step.si("start", -1), *steps).apply_async()
    summed = chord(wf.member.s(i, 0.005) for i in range(CHORD_MEMBERS))(wf.body.s())
    kills = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (Chord.objects.exists() or not walked.ready()):
        time.sleep(rng.uniform(0.4, 0.9))
        if not Chord.objects.exists() and not summed.ready():
            # The body is written and runs now. It is not acks_late: killed while it runs, it
            # is a WorkerLostError (at most once), which is not what this test is about.
            continue
        index = rng.randrange(len(workers))
        victim = workers[index]
        children = pool_children(victim.pid)
        if kills % 3 == 2 and children:
            os.kill(rng.choice(children), signal.SIGKILL)  # one pool child
        else:
            victim.kill()  # the main process and its children (its process group)
            workers[index] = start_worker("-c", "2", "-n", f"w{index}@%h", env=env)
        kills += 1
    wait_until(lambda: not Chord.objects.exists() and walked.ready(), timeout=60,
               what=f"the chain and the chord to finish, seed {seed}: {left()}")
    assert summed.get(timeout=60) == sum(range(CHORD_MEMBERS))
    assert walked.get(timeout=60).startswith(f"{CHAIN_STEPS - 1}-")
    received: dict[str, set[str]] = collections.defaultdict(set)
    runs: collections.Counter[str] = collections.Counter()
    for line in lines(record_file):
        runs[line[0]] += 1
        if line[0].startswith("step"):
            received[line[0]].add(line[1])
    doubled = {key: values for key, values in received.items() if len(values) > 1}
    missing = [k for k in range(-1, CHAIN_STEPS) if f"step{k}" not in runs]
    missing += [i for i in range(CHORD_MEMBERS) if f"member{i}" not in runs]
    for k in range(CHAIN_STEPS):
        if received.get(f"step{k}") and not all(v.startswith(f"{k - 1}-")
                                                for v in received[f"step{k}"]):
            doubled[f"step{k}"] = received[f"step{k}"]
    body_runs = [line for line in lines(record_file) if line[0] == "body"]
    reruns = sum(count - 1 for key, count in runs.items() if key != "body")
    fault_report(f"{kills} kill -9 of workers/children during a {CHAIN_STEPS}-step chain and a "
                 f"{CHORD_MEMBERS}-member chord", sent=CHAIN_STEPS + 1 + CHORD_MEMBERS + 1,
                 executed=len(runs), lost=len(missing), duplicated=len(doubled),
                 outcome=f"body ran {len(body_runs)}x, {reruns} acks_late reruns")
    assert not doubled and not missing, f"seed {seed}: doubled {doubled}, missing {missing}"
    assert [line[1:4] for line in body_runs] == [[str(CHORD_MEMBERS), str(sum(range(CHORD_MEMBERS))), "1"]]
    assert kills >= 3 and not Chord.objects.exists() and not ChainSegment.objects.exists()
    wait_until(lambda: not Message.objects.exclude(state="rejected").exists(), timeout=30,
               what="every message settled")
    assert summed.state == states.SUCCESS and group is not None
