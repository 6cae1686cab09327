"""Workflows in the worker: what follows a finished task, planned where it ran, is written in the
transaction that stores its result (:mod:`.workflow_writes`).

The pool process that ran a task of a workflow (its message has ``callbacks``, ``errbacks``,
``chain`` or ``chord``, see :mod:`djqueue.client.launch`) plans what follows it into a
:class:`Flow` returned with its outcome: the messages of its callbacks or errbacks and of the
chain's next step, the rows of chords that step starts, the FAILURE results of the chain's steps
that will not run, and the chords it is a member of. The worker's round (:mod:`.rounds`) writes a
flow only for a message it still held (its acknowledgement found it), in the transaction that
acknowledges it, and counts the chords down there (:func:`.workflow_writes.write`); the round
that takes a chord to zero writes its body, or fails it with :class:`ChordError`. A long chain's
segment (see :mod:`djqueue.client.launch`) is read in the pool process when its steps are
reached, and deleted in the transaction that writes the message planned from it. A kill at any
instant therefore leaves either the step done and what follows it written, or neither.

Celery calls a new-style errback (``errback(request, exc, traceback)``) in the failed task's
worker; here it is a message of ``djqueue.errback`` written with the failure, which calls it
with the request and exception rebuilt, so a crash never loses nor repeats it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import states
from ..backends import ResultRecord
from ..broker import operations
from ..broker.rows import ChordRow, NewMessage, SegmentRow
from ..canvas import chord
from ..client import builtins
from ..client.base import app
from ..client.eager import new_style
from ..client.launch import Planner, segment_of, with_member
from ..client.signature import Signature
from ..exceptions import DecodeError
from ..result import AsyncResult, GroupResult
from ..serialization import dumps, exception_to_data, loads

if TYPE_CHECKING:
    from .execution import Job

logger = logging.getLogger("djqueue.worker")

#: Body fields that make a message part of a workflow whose next steps its worker writes.
FIELDS = frozenset({"callbacks", "errbacks", "chain", "chord"})
#: Body fields a running task's request shows, as in Celery.
REQUEST_FIELDS = ("root_id", "parent_id", "group", "group_index", "chord", "callbacks",
                  "errbacks", "chain")


@dataclass(slots=True)
class Flow:
    """What follows a finished task of a workflow, to write with its outcome."""

    task_id: str
    messages: list[NewMessage] = field(default_factory=list)
    chords: list[ChordRow] = field(default_factory=list)
    records: list[ResultRecord] = field(default_factory=list)
    #: The chords it finishes a member of: ``(chord id, ChordError text or "")``.
    members: list[tuple[str, str]] = field(default_factory=list)
    #: The results of what it sent and started (``AsyncResult.children``), recorded with them,
    #: in their tuple form (a flow crosses from the pool process as plain data).
    children: list[Any] = field(default_factory=list)
    #: Segments of long chains to write, and the ids of those it read (to delete).
    segments: list[SegmentRow] = field(default_factory=list)
    spent: list[str] = field(default_factory=list)

    def add(self, planner: Planner) -> Flow:
        self.messages.extend(planner.messages)
        self.chords.extend(planner.chords)
        self.segments.extend(planner.segments)
        return self

    def __reduce__(self) -> tuple[type[Flow], tuple[Any, ...]]:
        # Sent back from the pool process with every outcome of a workflow task (each member of
        # a chord): as its fields, about two thirds of the time the dataclass's own pickling takes.
        return Flow, (self.task_id, self.messages, self.chords, self.records, self.members,
                      self.children, self.segments, self.spent)

    def pop(self, stack: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
        """Take the next step off a chain's ``stack`` (None: the chain ends). A step that refers
        to a segment is replaced, in place, by the segment's steps, read now (and noted as
        spent)."""
        while stack:
            step = stack.pop()
            segment_id = segment_of(step)
            if segment_id is None:
                return step
            found = operations(app.conf.broker_alias).chain_segment(segment_id)
            if found is None:
                logger.error("Chain segment %s is not in the database (deleted?): the steps of "
                             "the chain of %s after it do not run.", segment_id, self.task_id)
                return None
            self.spent.append(segment_id)
            stack[:] = loads(found[1], found[0], app.conf.CELERY_ACCEPT_CONTENT or [])
        return None


def request_fields(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The workflow fields of a message for its task's request (``self.request.root_id``…)."""
    return {name: payload.get(name) for name in REQUEST_FIELDS}


# In the pool process: what follows a task.


def _planner(job: Job, payload: Mapping[str, Any]) -> Planner:
    return Planner(app, root_id=payload.get("root_id") or job.task_id, parent_id=job.task_id)


def succeeded(job: Job, payload: Mapping[str, Any], value: Any, stored: bool = True) -> Flow:
    """The callbacks and the chain's next step of a task that returned ``value``, and its
    children when its result is ``stored`` (as Celery's, none for an ignored result)."""
    flow = Flow(job.task_id)
    callbacks = payload.get("callbacks")
    stack = list(payload.get("chain") or ())
    if callbacks or stack:  # not for a chord's member alone
        planner = _planner(job, payload)
        linked = [planner.plan(Signature.from_dict(callback, app=app), (value,))
                  for callback in callbacks or ()]
        children = _children(linked)
        following = flow.pop(stack)
        if following is not None:
            children.append(planner.plan(Signature.from_dict(following, app=app), (value,),
                                         stack=stack))
        if stored:
            flow.children = [child.as_tuple() for child in children]
        flow.add(planner)
    if payload.get("chord"):
        flow.members.append((payload["chord"], ""))
    return flow


def _children(linked: list[AsyncResult | GroupResult]) -> list[AsyncResult | GroupResult]:
    """A finished task's children for its callbacks, as Celery records them: one callback's
    result, or for several the groups among them and one group of the others."""
    if len(linked) < 2:
        return linked
    groups: list[AsyncResult | GroupResult] = [r for r in linked if isinstance(r, GroupResult)]
    others = [r for r in linked if not isinstance(r, GroupResult)]
    return [*groups, GroupResult(None, others, app=app)] if others else groups


def with_sent(flow: Flow | None, task_id: str, sent: list[AsyncResult | GroupResult]) -> Flow:
    """``flow`` (or a new one) of a task that sent ``sent`` while it ran: the first of its
    children, as in Celery (:mod:`djqueue.client.result_graph`)."""
    flow = flow or Flow(task_id)
    flow.children[:0] = [result.as_tuple() for result in sent]
    return flow


def failed(job: Job, payload: Mapping[str, Any], exc: BaseException, traceback: str | None,
           state: str = states.FAILURE) -> Flow:
    """The errbacks of a task that failed (not for REVOKED), FAILURE for the rest of its chain,
    and its chords told."""
    request = {"id": job.task_id, "task": job.task_name, "args": payload.get("args", []),
               "kwargs": payload.get("kwargs", {}), "retries": job.retries,
               "hostname": job.hostname, "is_eager": False, "called_directly": False,
               "delivery_info": {"routing_key": job.queue, "priority": job.priority},
               **request_fields(payload)}
    flow = Flow(job.task_id)
    planner = _planner(job, payload)
    fail_onward(flow, planner, request, payload.get("errbacks") or (),
                list(payload.get("chain") or ()), payload.get("chord"), exc, traceback, state)
    return flow.add(planner)


def replaced(job: Job, payload: Mapping[str, Any], sig: Signature) -> Flow:
    """``Task.replace(sig)``: ``sig`` takes over the task's id, callbacks, errbacks, chord and
    the rest of its chain (as Celery's)."""
    sig = _with_final_id(sig.clone(), job.task_id)
    for callback in payload.get("callbacks") or ():
        sig.link(callback)
    for errback in payload.get("errbacks") or ():
        sig.link_error(errback)
    if payload.get("chord"):
        sig = with_member(sig, payload["chord"], payload.get("group_index") or 0)
    planner = Planner(app, root_id=payload.get("root_id") or job.task_id,
                      parent_id=payload.get("parent_id") or job.task_id)
    planner.plan(sig, stack=list(payload.get("chain") or ()))
    return Flow(job.task_id).add(planner)


def _with_final_id(sig: Signature, task_id: str) -> Signature:
    kind = sig.subtask_type
    if kind == "chain":
        steps = sig.steps()  # type: ignore[attr-defined]
        sig.tasks = [*steps[:-1], _with_final_id(steps[-1].clone(), task_id)]  # type: ignore[attr-defined]
        return sig
    if kind == "chord":
        sig.body = _with_final_id(sig.body.clone(), task_id)  # type: ignore[attr-defined]
        return sig
    if kind == "group":  # as Celery's: a chord whose body returns the group's results
        return _with_final_id(chord(sig, Signature(builtins.ACCUMULATE, kwargs={"index": 0},
                                                   app=app), app=app), task_id)
    sig.options["task_id"] = task_id
    return sig


def from_body(job: Job, exc: BaseException, state: str) -> Flow | None:
    """For a task that failed without running to its end (lost, timed out, unregistered,
    revoked): its flow from its message, when it has one."""
    if state not in (states.FAILURE, states.REVOKED):
        return None
    if job.content_type == "application/json" and not any(
            f'"{name}"' in job.body for name in FIELDS):
        return None  # no workflow: nothing to decode
    try:
        payload = loads(job.body, job.content_type, app.conf.CELERY_ACCEPT_CONTENT or [])
    except DecodeError:
        return None
    if not isinstance(payload, dict) or not FIELDS & payload.keys():
        return None
    return failed(job, payload, exc, None, state)


def fail_onward(flow: Flow, planner: Planner, request: dict[str, Any],
                errbacks: Iterable[Mapping[str, Any]], stack: list[Mapping[str, Any]],
                chord: str | None, exc: BaseException, traceback: str | None,
                state: str) -> None:
    """Into ``flow``, what a task's failure (``request``, ``exc``) leads to: its errbacks
    (FAILURE only), and for FAILURE or REVOKED the same result for the steps of its chain's
    ``stack`` (segments read) and the chords they or it are members of, told."""
    task_id = request["id"]
    if state == states.FAILURE:
        for errback in errbacks:
            sig = Signature.from_dict(errback, app=app)
            if new_style(sig):
                options = {k: v for k, v in sig.options.items() if k in ("queue", "priority")}
                planner.plan(Signature(builtins.ERRBACK, (sig.as_dict(), request,
                                                          exception_to_data(exc), traceback),
                                       options=options, app=app))
            else:
                planner.plan(sig, (task_id,))
    dependency = f"Dependency {task_id} raised {exc!r}"
    if chord:
        flow.members.append((chord, dependency))
    if state not in states.PROPAGATE_STATES:
        return
    serializer = app.conf.CELERY_RESULT_SERIALIZER
    content_type, result = dumps(exception_to_data(exc), serializer)
    while (element := flow.pop(stack)) is not None:  # the steps that will not run fail with it
        options = element.get("options") or {}
        if options.get("task_id") and not element.get("subtask_type"):
            flow.records.append(ResultRecord(options["task_id"], state, element.get("task", ""),
                                             content_type, result, traceback))
        if options.get("chord"):
            flow.members.append((options["chord"], dependency))
