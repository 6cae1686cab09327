"""``CELERY_ANNOTATIONS``: task attributes set from settings.

Forms, as in Celery: a mapping of task name to attributes (``{"tasks.add": {"rate_limit":
"10/m"}}``), the key ``"*"`` for every task, an object with ``annotate(task)`` returning a mapping
(or None), a dotted path to such an object (or its class), and a list of any of these.

For each task, the first entry of the list that names it exactly applies, and so does the first
``"*"`` entry; when both set one attribute, the task's own entry wins.

Annotations are instance attributes laid over the class attributes that ``@task(...)`` options
set, so taking them away restores the decorator's values. The app re-applies them whenever it
hands a task out and the setting has changed (``override_settings``, ``app.conf.update``). When
Django says the setting changed (``setting_changed``: ``override_settings``, pytest-django's
``settings``), every task loses at once what the old value gave it: a task held directly (``from
tasks import add``) kept it until the app next handed it out, so one test's annotations showed
in the next.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from ..exceptions import ImproperlyConfigured
from ..setting_names import canonical_name

if TYPE_CHECKING:
    from .task import Task

_APPLIED = "_djqueue_annotations"  # instance attribute: (setting value, names it set)
#: The tasks annotations were laid over, to take them away when the setting changes.
_ANNOTATED: weakref.WeakSet[Task] = weakref.WeakSet()


def annotators(setting: Any) -> list[Any]:
    """The entries of ``CELERY_ANNOTATIONS``, in order, with dotted paths imported."""
    if setting is None:
        return []
    if isinstance(setting, (list, tuple)):
        return [entry for item in setting for entry in annotators(item)]
    if isinstance(setting, str):
        setting = import_string(setting)
    if isinstance(setting, type):
        setting = setting()
    if not isinstance(setting, Mapping) and not callable(getattr(setting, "annotate", None)):
        raise ImproperlyConfigured(
            f"CELERY_ANNOTATIONS entry {setting!r} is not a mapping nor an object with annotate(task)"
        )
    return [setting]


def attributes_for(task: Task, setting: Any) -> dict[str, Any]:
    """The attributes ``setting`` gives ``task``."""
    own: Mapping[str, Any] | None = None
    every: Mapping[str, Any] | None = None
    for entry in annotators(setting):
        if isinstance(entry, Mapping):
            if own is None and task.name in entry:
                own = entry[task.name]
            if every is None and "*" in entry:
                every = entry["*"]
        elif own is None:
            own = entry.annotate(task)
    result: dict[str, Any] = {}
    for part in (every, own):
        if part is None:
            continue
        if not isinstance(part, Mapping):
            raise ImproperlyConfigured(
                f"CELERY_ANNOTATIONS for {task.name!r} must be a mapping of attributes, not {part!r}"
            )
        result.update(part)
    return result


def apply(task: Task, setting: Any) -> None:
    """Make ``task``'s annotated attributes those of ``setting`` (no-op when unchanged)."""
    previous = task.__dict__.get(_APPLIED)
    if previous is not None and (previous[0] is setting or previous[0] == setting):
        return
    attributes = attributes_for(task, setting)
    for name in attributes:
        if name.startswith("_") or not hasattr(type(task), name):
            raise ImproperlyConfigured(
                f"CELERY_ANNOTATIONS sets {name!r} on {task.name!r}, which is not a task attribute"
            )
    for name in previous[1] if previous else ():
        task.__dict__.pop(name, None)
    task.__dict__.update(attributes)
    task.__dict__[_APPLIED] = (setting, tuple(attributes))
    _ANNOTATED.add(task)


def take_away(task: Task) -> None:
    """Remove what annotations set on ``task``: its own values show until the app next hands
    it out, which applies the setting then in force."""
    previous = task.__dict__.pop(_APPLIED, None)
    for name in previous[1] if previous else ():
        task.__dict__.pop(name, None)


def _setting_changed(setting: str, **kwargs: Any) -> None:
    if canonical_name(setting) == "CELERY_ANNOTATIONS":
        for task in list(_ANNOTATED):
            take_away(task)


setting_changed.connect(_setting_changed, dispatch_uid="djqueue.client.annotations")


def named_tasks(setting: Any) -> set[str]:
    """Task names that mapping entries of ``setting`` name (for the system checks)."""
    return {
        name
        for entry in annotators(setting)
        if isinstance(entry, Mapping)
        for name in entry
        if name != "*"
    }
