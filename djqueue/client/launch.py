"""How a canvas becomes messages: :class:`Planner` turns signatures, chains, groups and chords
into the message rows and chord rows to write, all at once.

A workflow travels in its messages, in body fields with Celery's names (only when set, so a plain
task's message is unchanged): ``root_id`` and ``parent_id``; ``callbacks`` and ``errbacks``
(``link``/``link_error``, as signature dicts); ``chain``, the remaining steps, the next one last
(Celery's stack); and for a chord's header member ``chord`` (the chord's id), ``group`` and
``group_index``. A stack of more than :data:`SEGMENT_STEPS` steps is cut: the message carries the
next ones and, at the bottom, a reference to a segment row holding the rest
(:class:`~djqueue.broker.rows.SegmentRow`), so that a step of a chain of any length costs the
same. A chord is also a row (:class:`~djqueue.broker.rows.ChordRow`): its pending count, its
body, its members' task ids. Every task id is given up front (frozen), so the results of the
whole workflow can be returned before any of it runs.

The same planner runs on both sides: the caller's ``apply_async`` writes what it planned in one
transaction (:func:`send`); a worker plans a finished task's next steps and writes them in the
round that stores its result (:mod:`djqueue.worker.workflow`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.db import transaction

from ..broker import operations
from ..broker.rows import ChordRow, NewMessage, SegmentRow
from ..result import AsyncResult, GroupResult
from ..serialization import dumps
from . import publishing
from .call_checks import check_canvas_call
from .signature import Signature, as_dict, listed, new_id

if TYPE_CHECKING:
    from .base import App, Batch

#: Call options that make a call part of a workflow (``apply_async(link=…)`` and the fields a
#: planner sets); a call with none of them is sent as before, with nothing added to its message.
WORKFLOW_OPTIONS = frozenset({"link", "link_error", "root_id", "parent_id", "group_id",
                              "group_index", "chord"})
#: A chord member's fields, kept in its signature's options until its message is built.
MEMBER_OPTIONS = ("chord", "group_id", "group_index")
#: The most steps of a chain one message carries. Celery's messages carry all of them: the steps
#: of a chain of 1,000 made 140 kB to decode, encode and write again at each step.
SEGMENT_STEPS = 100
#: The ``subtask_type`` of a stack's bottom element that refers to the segment after it.
SEGMENT = "djqueue.segment"


class Planner:
    """Collects the messages and chord rows of one or more canvases, to be written together.

    ``root_id``/``parent_id`` are those of the task whose follow-ups these are (None when the
    caller starts a workflow: its first task is its root).
    """

    def __init__(self, app: App, batch: Batch | None = None, *, root_id: str | None = None,
                 parent_id: str | None = None, checked: bool = False) -> None:
        self.app = app
        #: Whether the calls sent now are argument-checked (a caller's canvas: Celery's typing).
        self.checked = checked
        self.batch = batch or app.batch()
        self.root_id = root_id
        self.parent_id = parent_id
        self.messages: list[NewMessage] = []
        self.chords: list[ChordRow] = []
        self.segments: list[SegmentRow] = []
        #: Whether every message planned carries workflow fields (set by chains and chords).
        self.workflow = parent_id is not None

    def plan(
        self, sig: Signature, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
        *, stack: Sequence[Mapping[str, Any]] = (),
    ) -> AsyncResult | GroupResult:
        """Plan ``sig`` called with ``args`` put first; ``stack`` is the chain that follows it.
        Returns its result (of a chain: its last step's, with ``parent`` links back)."""
        kind = sig.subtask_type
        if kind == "chain":
            return self._chain(sig, args, kwargs, stack)
        if kind == "group":
            return self._group(sig, args, kwargs, stack)
        if kind == "chord":
            return self._chord(sig, args, kwargs, stack)
        return self._task(sig, args, kwargs, stack)

    def _task(self, sig: Signature, args: Sequence[Any], kwargs: Mapping[str, Any] | None,
              stack: Sequence[Mapping[str, Any]], member: tuple[str, int] | None = None,
              given_id: str | None = None) -> AsyncResult:
        """One task's message; ``member``: ``(chord id, index)`` of a chord header task."""
        call = sig.clone(args, kwargs)
        if self.checked:
            check_canvas_call(self.app, call.task, call.args, call.kwargs)
        options = call.options
        task_id = options.pop("task_id", None) or given_id or new_id()
        if member is not None:
            options["chord"] = options["group_id"] = member[0]
            options["group_index"] = member[1]
        if not (self.workflow or stack or options.keys() & WORKFLOW_OPTIONS):
            self.messages.append(call.build_message(self.batch, task_id))
            return AsyncResult(task_id, app=self.app, task_name=call.task)
        if self.root_id is None:  # the first task of a workflow is its root
            self.root_id = task_id
        fields: dict[str, Any] = {"root_id": options.pop("root_id", None) or self.root_id}
        parent = options.pop("parent_id", None) or self.parent_id
        if parent:
            fields["parent_id"] = parent
        for option, field in (("link", "callbacks"), ("link_error", "errbacks")):
            linked = options.pop(option, None)
            if linked:
                fields[field] = [as_dict(s) for s in listed(linked)]
        if stack:
            fields["chain"] = list(stack)
        if "chord" in options:
            fields["chord"] = options.pop("chord")
        if "group_id" in options:
            fields["group"] = options.pop("group_id")
            fields["group_index"] = options.pop("group_index", None)
        self.messages.append(call.build_message(self.batch, task_id, fields))
        return AsyncResult(task_id, app=self.app, task_name=call.task)

    def _chain(self, sig: Signature, args: Sequence[Any], kwargs: Mapping[str, Any] | None,
               stack: Sequence[Mapping[str, Any]]) -> AsyncResult | GroupResult:
        self.workflow = True
        steps = sig.steps()  # type: ignore[attr-defined]
        if not steps:
            raise ValueError("an empty chain has nothing to run")
        results = [frozen(step) for step in steps]
        for earlier, later in zip(results, results[1:]):
            later.parent = earlier
        rest = [step.as_dict() for step in reversed(steps[1:])]
        first = self.plan(steps[0], args, kwargs, stack=self._segmented([*stack, *rest]))
        if len(steps) == 1:
            return first
        return results[-1]

    def _segmented(self, stack: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """``stack`` as a message carries it: its next :data:`SEGMENT_STEPS` steps above a
        reference to a segment of the steps after them, and so on (each segment's bottom
        refers to the next)."""
        cut = len(stack) - SEGMENT_STEPS
        reference: list[Mapping[str, Any]] = []
        for start in range(0, cut, SEGMENT_STEPS):  # from the bottom: the last steps first
            segment_id = new_id()
            content_type, text = dumps([*reference, *stack[start:min(start + SEGMENT_STEPS, cut)]],
                                       self.batch.serializer)
            self.segments.append(SegmentRow(segment_id, content_type, text))
            reference = [{"task": SEGMENT, "args": [], "kwargs": {}, "subtask_type": SEGMENT,
                          "options": {"segment_id": segment_id}, "immutable": True}]
        return [*reference, *stack[max(cut, 0):]]

    def _group(self, sig: Signature, args: Sequence[Any], kwargs: Mapping[str, Any] | None,
               stack: Sequence[Mapping[str, Any]]) -> GroupResult:
        if stack:
            raise ValueError("a group followed by more steps is a chord: chain(group, sig)")
        group_id = sig.options.get("task_id") or new_id()
        extra = _group_options(sig.options)
        results = [self.plan(m.clone(**extra), args, kwargs)
                   for m in sig.tasks]  # type: ignore[attr-defined]
        return GroupResult(group_id, results, app=self.app)

    def _chord(self, sig: Signature, args: Sequence[Any], kwargs: Mapping[str, Any] | None,
               stack: Sequence[Mapping[str, Any]]) -> AsyncResult | GroupResult:
        self.workflow = True
        header: list[Signature] = sig.header_tasks()  # type: ignore[attr-defined]
        body: Signature = sig.body  # type: ignore[attr-defined]
        chord_id = sig.options.get("task_id") or new_id()
        body_result = frozen(body)
        if not header:  # Celery: the body runs at once, with an empty list
            self.plan(body, ([],), stack=stack)
            result = body_result
            result.parent = GroupResult(chord_id, [], app=self.app)
            return result
        extra = _group_options(sig.options)
        members = []
        ids = publishing.new_task_ids(len(header))
        for index, (member, task_id) in enumerate(zip(header, ids)):
            if extra:
                member = member.clone(**extra)
            if member.subtask_type:
                members.append(self.plan(with_member(member, chord_id, index), args, kwargs))
            else:  # the common header: plain calls, each cloned once
                members.append(self._task(member, args, kwargs, (), (chord_id, index), task_id))
        self.chords.append(ChordRow(chord_id, len(members), json.dumps({
            "body": body.as_dict(), "chain": list(stack), "root_id": self.root_id,
        }), json.dumps([m.id for m in members])))
        body_result.parent = GroupResult(chord_id, members, app=self.app)
        return body_result


def _group_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """What a group's or chord's own call options give each member: all but its id and links."""
    return {k: v for k, v in options.items() if k not in ("task_id", "link", "link_error")}


def segment_of(step: Mapping[str, Any]) -> str | None:
    """The id of the segment a chain's stack ``step`` refers to, None for a step."""
    return step["options"]["segment_id"] if step.get("subtask_type") == SEGMENT else None


def frozen(sig: Signature) -> AsyncResult:
    """The result of ``sig``'s final task, its id given now if it had none."""
    kind = sig.subtask_type
    if kind == "chain":
        return frozen(sig.steps()[-1])  # type: ignore[attr-defined]
    if kind == "chord":
        return frozen(sig.body)  # type: ignore[attr-defined]
    if kind == "group":
        raise ValueError("a group's result is not one task's: use it as a chord header")
    return sig.freeze()


def with_member(sig: Signature, chord_id: str, index: int) -> Signature:
    """``sig`` with its final task made member ``index`` of chord ``chord_id``: a signature
    itself, a chain's last step, a chord's body."""
    kind = sig.subtask_type
    if kind == "chain":
        steps = sig.steps()  # type: ignore[attr-defined]
        changed = copy.copy(sig)
        changed.tasks = [*steps[:-1], with_member(steps[-1], chord_id, index)]  # type: ignore[attr-defined]
        return changed
    if kind == "chord":
        changed = copy.copy(sig)
        changed.body = with_member(sig.body, chord_id, index)  # type: ignore[attr-defined]
        return changed
    if kind == "group":
        raise ValueError("a group inside a chord header is flattened into it; one at the end of "
                         "a header member's chain has no single result")
    return sig.clone(chord=chord_id, group_id=chord_id, group_index=index)


def send(planner: Planner) -> None:
    """Write what ``planner`` planned, in one transaction (the caller's, when there is one)."""
    using = planner.app.conf.broker_alias
    with transaction.atomic(using=using):
        if planner.chords:
            operations(using).create_chords(planner.chords)
        if planner.segments:
            operations(using).create_chain_segments(planner.segments)
        publishing.publish(planner.messages, using=using)


def apply_async(sig: Signature, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                *, checked: bool = False) -> AsyncResult | GroupResult:
    """Send any canvas: plan it, then write it in one transaction. ``checked``: the calls it
    sends now are argument-checked first (a canvas's ``apply_async``)."""
    planner = Planner(sig.app, checked=checked)
    result = planner.plan(sig, args, kwargs)
    send(planner)
    return result

