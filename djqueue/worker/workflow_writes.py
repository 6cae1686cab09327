"""Workflows in the worker's round (see :mod:`.workflow`): the flows of the tasks a round
settles, written only for the messages it still held, as PostgreSQL's one-statement round takes
them (:func:`in_one_statement`, :func:`rows`) or in the round's transaction (:func:`write`), with
chords counted down and the body of each chord that reaches zero planned and written there; and
the flows of tasks lost with their worker (:func:`lost`, in recovery's transaction).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from .. import states
from ..backends import ResultBackend, ResultRecord
from ..broker import operations
from ..broker.rows import ClaimRequest, FlowRows
from ..client.base import app
from ..client.launch import Planner
from ..client.result_graph import children_record
from ..client.signature import Signature
from ..exceptions import ChordError
from ..serialization import dumps, exception_to_data, loads_many
from .workflow import Flow, fail_onward, from_body

if TYPE_CHECKING:
    from ..broker.base import Operations
    from ..broker.rows import Lost

logger = logging.getLogger("djqueue.worker")


def lost(using: str, messages: Sequence[Lost], errors: Sequence[BaseException]) -> None:
    """Tasks of workflows whose worker was lost while they ran (set aside by recovery, in the
    caller's transaction): their errbacks, chains and chords, as for any failure."""
    flows = []
    for message, error in zip(messages, errors):
        # What from_body reads of a Job: a message lost with its worker has none.
        job = SimpleNamespace(task_id=message.task_id, task_name=message.task_name,
                              queue=message.queue, priority=0, retries=0,
                              content_type=message.content_type, body=message.body,
                              hostname=message.worker)
        found = from_body(job, error, states.FAILURE)  # type: ignore[arg-type]
        if found is not None:
            flows.append(found)
    if flows:
        write(operations(using), app.backend, None, flows)


# In the worker's round: writing flows and counting chords down.


def in_one_statement(flows: Sequence[Flow]) -> bool:
    """Whether a round that is one statement can write ``flows``
    (:meth:`~djqueue.broker.base.Operations.run_round`): messages, and the members of at most
    one chord (its row is the only one the statement locks, so two rounds never wait on each
    other in opposite orders). Chords to create, chain segments to write or delete and failures
    of later steps go in a transaction (:func:`write`)."""
    chords = {chord_id for flow in flows for chord_id, _ in flow.members}
    return len(chords) <= 1 and not any(flow.chords or flow.records or flow.segments or flow.spent
                                        for flow in flows)


def rows(flows: Sequence[Flow], claim: ClaimRequest | None,
         stored: bool) -> tuple[FlowRows, ClaimRequest | None]:
    """``flows`` as a round that is one statement writes them, and the claim that goes with it.
    A message that ``claim`` would start at once (see
    :class:`~djqueue.broker.rows.StartNow`: a task this worker knows, on a queue it consumes,
    due now) is written started by this worker, up to the pool's idle room: so a chain's next
    step runs without a round to claim it. The claim then has that much less room. The
    children's records go with them when results are ``stored`` (in the round's database)."""
    start = claim.start if claim is not None else None
    room = min(start.idle, claim.limit) if start is not None and claim is not None else 0
    names = set(start.names) if start is not None and room else set()
    late = set(start.acks_late_names) if start is not None and room else set()
    queues = set(claim.queues) if claim is not None and room else set()
    now = timezone.now()
    written = FlowRows([], [], [], [], [], [])
    for flow in flows:
        if stored and flow.children:
            written.children.append((flow.task_id, children_record(flow.task_id, flow.children)))
        for message in flow.messages:
            head = message.head
            go = (room > 0 and head.task_name in names and head.queue in queues
                  and head.available_at <= now)
            room -= go
            written.parents.append(flow.task_id)
            written.messages.append(message)
            written.start.append(go)
            written.acks_late.append(go and head.task_name in late)
        written.members.extend((flow.task_id, chord_id, failure)
                               for chord_id, failure in flow.members)
    taken = sum(written.start)
    if taken and claim is not None and start is not None:
        claim = dataclasses.replace(claim, limit=claim.limit - taken, start=dataclasses.replace(
            start, idle=start.idle - taken))
    return written, claim


def write(broker: Operations, backend: ResultBackend, held: set[str] | None,
          flows: Sequence[Flow]) -> None:
    """Write the flows of the messages this round still held (``held``: their task ids; None:
    all), in the round's transaction, after its results; then count their chords down, and for
    each chord that reaches zero write its body (or its failure), and so on up nested chords."""
    pending = [f for f in flows if held is None or f.task_id in held]
    while pending:
        _write_flows(broker, backend, pending)
        members: dict[str, list[Any]] = {}
        for flow in pending:
            for chord_id, failure in flow.members:
                count = members.setdefault(chord_id, [0, ""])
                count[0] += 1
                count[1] = count[1] or failure
        pending = []
        for chord_id in sorted(members):  # one order for every worker: no deadlock
            finished, failure = members[chord_id]
            left = broker.count_down_chord(chord_id, finished, failure)
            if left is None:
                logger.warning("Chord %s is not in the database (deleted?): its body is not run.",
                               chord_id)
            elif left <= 0:
                row = broker.finish_chord(chord_id)
                if row is not None:
                    pending.append(_body(backend, chord_id, *row))


def _write_flows(broker: Operations, backend: ResultBackend, flows: Sequence[Flow]) -> None:
    chords = [row for flow in flows for row in flow.chords]
    if chords:
        broker.create_chords(chords)
    segments = [row for flow in flows for row in flow.segments]
    if segments:
        broker.create_chain_segments(segments)
    spent = [segment_id for flow in flows for segment_id in flow.spent]
    if spent:
        broker.delete_chain_segments(spent)
    messages = [message for flow in flows for message in flow.messages]
    if len(messages) == 1:
        broker.publish_one(messages[0], timezone.now())
    elif messages:
        broker.publish_many(messages, timezone.now())
    records = [record for flow in flows for record in flow.records]
    records.extend(children_record(f.task_id, f.children) for f in flows if f.children)
    if records and backend.enabled:
        backend.store(records)


def _body(backend: ResultBackend, chord_id: str, failure: str, body_text: str,
          members_text: str) -> Flow:
    """What a chord whose last member finished leads to: its body with the members' results,
    or, if one failed, the body's FAILURE (ChordError) and its errbacks."""
    spec = json.loads(body_text)
    body = Signature.from_dict(spec["body"], app=app)
    planner = Planner(app, root_id=spec.get("root_id"), parent_id=None)
    planner.workflow = True
    flow = Flow(chord_id)
    stack = spec.get("chain") or []
    if failure:
        error = ChordError(failure)
        # The body's first task fails with ChordError, and the rest of its chain with it.
        steps = body.steps() if body.subtask_type == "chain" else [body]  # type: ignore[attr-defined]
        first, rest = steps[0], [s.as_dict() for s in reversed(steps[1:])]
        task_id = first.options.get("task_id") or ""
        content_type, result = dumps(exception_to_data(error), app.conf.CELERY_RESULT_SERIALIZER)
        flow.records.append(ResultRecord(task_id, states.FAILURE, first.task, content_type,
                                         result))
        request = {"id": task_id, "task": first.task, "args": list(first.args),
                   "kwargs": first.kwargs, "root_id": spec.get("root_id"), "group": None,
                   "chord": None, "is_eager": False, "called_directly": False}
        options = first.options
        errbacks = [s if isinstance(s, Mapping) else s.as_dict()
                    for s in options.get("link_error") or ()]
        fail_onward(flow, planner, request, errbacks, [*stack, *rest], options.get("chord"),
                    error, None, states.FAILURE)
        return flow.add(planner)
    ids = json.loads(members_text)
    found = backend.results_of(ids) if backend.enabled else {}
    rows = (found.get(task_id) or ("", "", None) for task_id in ids)
    values = loads_many([(result if state == states.SUCCESS else None, content_type)
                         for state, content_type, result in rows], app.result_accept_content())
    planner.plan(body, (values,), stack=stack)
    return flow.add(planner)
