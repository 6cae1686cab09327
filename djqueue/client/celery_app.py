"""Celery's app object as a Celery project writes it, in ``proj/celery.py``::

    import os
    from djqueue import Celery

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
    app = Celery("proj")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.autodiscover_tasks()

    @app.task(bind=True)
    def debug_task(self): ...

with ``from .celery import app as celery_app`` in ``proj/__init__.py``. Django imports that
package while it reads the settings, before its app registry is ready, and djqueue's App needs the
models. So :class:`Celery` is a handle that loads nothing: what Celery's guide does at import time
(``config_from_object``, ``autodiscover_tasks``, ``conf``, ``@app.task``) is recorded here, and
every other attribute is the App's (``djqueue.app``), reached on first use.

One process has one djqueue app. ``Celery(...)`` returns the one handle on it, however often it
is called: a second ``Celery("other", ...)`` applies its arguments to the same app (and a
different name is logged as a warning), like ``current_app``, which is that handle too.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from django.apps import apps as django_apps
from django.conf import settings as django_settings

from ..conf import Settings
from ..setting_names import NAMESPACE, ConfigSource

if TYPE_CHECKING:
    from .base import App
    from .task import Task

logger = logging.getLogger("djqueue.app")

#: The settings of the process's one app; ``djqueue.app`` is made with them.
CONF = Settings()

#: ``Celery()`` arguments that have nothing to choose here: there is one app, finalized on use.
_ACCEPTED_WITHOUT_EFFECT = ("set_as_current", "autofinalize")

Packages = Iterable[str] | Callable[[], Iterable[str]] | None


class _Setup:
    """What the handle recorded before the App could be loaded, for the App to act on."""

    main: str | None = None
    discovery: ClassVar[list[tuple[Packages, str]]] = []
    pending: ClassVar[list[PendingTask]] = []


def main_name() -> str:
    """The name the project gave its app (``Celery("proj")``), else ``"djqueue"``."""
    return _Setup.main or "djqueue"


def _app() -> App:
    # Imported on first use: the App loads djqueue's models, which Django can import only once
    # its app registry is ready, and this module is imported before (from a project's package).
    from .base import app

    return app


def requested_modules(conf: Settings) -> list[str]:
    """The task modules ``autodiscover_tasks()`` and ``CELERY_INCLUDE`` ask for, in order
    (``App.autodiscover`` imports them after ``CELERY_IMPORTS``). A package without the related
    module is skipped, as Celery does; a package that does not exist raises ImportError."""
    modules: list[str] = []
    for packages, related_name in _Setup.discovery:
        if callable(packages):
            packages = packages()
        # An INSTALLED_APPS entry may name an AppConfig class: its app's package is meant.
        configs = {f"{type(c).__module__}.{type(c).__qualname__}": c.name
                   for c in django_apps.get_app_configs()}
        if packages is None:
            packages = list(configs.values())
        for package in packages:
            package = configs.get(package, package)
            name = f"{package}.{related_name}" if related_name else package
            if importlib.util.find_spec(name) is not None:
                modules.append(name)
    include = conf.CELERY_INCLUDE or ()
    modules.extend([include] if isinstance(include, str) else include)
    return modules


def register_pending() -> None:
    """Register the tasks ``@app.task`` declared before the App could be loaded."""
    while _Setup.pending:
        _Setup.pending.pop(0).task()


class PendingTask:
    """A task declared with ``@app.task`` before Django's app registry was ready (a task in
    ``proj/celery.py``): it becomes a real task when the App discovers tasks, or on first use."""

    def __init__(self, fun: Callable[..., Any], options: dict[str, Any]) -> None:
        self._fun, self._options = fun, options
        self._task: Task | None = None
        self.__wrapped__ = fun

    def task(self) -> Task:
        if self._task is None:
            self._task = _app().task(**self._options)(self._fun)
        return self._task

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.task(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.task()(*args, **kwargs)

    def __repr__(self) -> str:
        return repr(self._task) if self._task is not None else f"<pending task {self._fun!r}>"


class Celery:
    """``Celery("proj", broker=..., backend=..., include=[...])``: the handle on the process's
    one app (see the module docstring). ``broker``, ``backend``, ``include`` and ``changes`` set
    ``BROKER_URL``, ``CELERY_RESULT_BACKEND``, ``CELERY_INCLUDE`` and any settings as runtime
    overrides, which win over the Django settings, as Celery's constructor arguments do."""

    _one: ClassVar[Celery | None] = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Celery:
        if Celery._one is None:
            Celery._one = super().__new__(cls)
        return Celery._one

    def __init__(
        self,
        main: str | None = None,
        *,
        broker: str | None = None,
        backend: str | None = None,
        include: Iterable[str] | None = None,
        changes: Mapping[str, Any] | None = None,
        config_source: object = None,
        namespace: str | None = None,
        **options: Any,
    ) -> None:
        unknown = sorted(set(options) - set(_ACCEPTED_WITHOUT_EFFECT))
        if unknown:
            raise TypeError(
                f"Celery() got argument(s) djqueue does not have: {', '.join(unknown)}; it takes "
                "main, broker, backend, include, changes, config_source, namespace, "
                + ", ".join(_ACCEPTED_WITHOUT_EFFECT))
        if main is not None:
            if _Setup.main is not None and _Setup.main != main:
                logger.warning("Celery(%r): this process already has the djqueue app %r, and "
                               "one process has one app; both names are that app.", main,
                               _Setup.main)
            else:
                _Setup.main = main
                if "djqueue.client.base" in sys.modules:  # the App exists: it takes the name
                    _app().main = main
        overrides = dict(changes or {})
        if broker is not None:
            overrides["broker_url"] = broker
        if backend is not None:
            overrides["result_backend"] = backend
        if include is not None:
            overrides["include"] = list(include)
        CONF.update(overrides)
        if config_source is not None:
            self.config_from_object(config_source, namespace=namespace)

    def __repr__(self) -> str:
        return f"<Celery {self.main} (djqueue)>"

    def __getattr__(self, name: str) -> Any:
        """Everything else is the App's (``send_task``, ``tasks``, ``control``, ``backend``, …)."""
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(_app(), name)

    def _get_current_object(self) -> App:
        """The App itself (Celery's proxies have this method)."""
        return _app()

    @property
    def main(self) -> str:
        return main_name()

    @property
    def conf(self) -> Settings:
        """The app's settings (``app.conf.task_always_eager = True``, ``app.conf.update(...)``)."""
        return CONF

    def config_from_object(self, obj: object, silent: bool = False, force: bool = False,
                           namespace: str | None = None) -> None:
        """Read settings from ``obj``, as Celery does; nothing is read until a setting is used.

        ``"django.conf:settings"`` (or the settings object) with ``namespace="CELERY"`` or none
        is what djqueue reads anyway: Django's settings, under both sets of Celery's names.
        Anything else (a module, its dotted path, a class, a mapping, the Django settings under
        another namespace) is read before the Django settings. ``silent`` and ``force`` are
        accepted for Celery's signature: the source is imported lazily, where a bad path raises.
        """
        is_django = obj == "django.conf:settings" or obj is django_settings
        if is_django and namespace in (NAMESPACE, None):
            CONF.read_from(None)
        else:
            CONF.read_from(ConfigSource(django_settings if is_django else obj, namespace))

    def autodiscover_tasks(self, packages: Packages = None, related_name: str = "tasks",
                           force: bool = False) -> None:
        """Import ``<package>.<related_name>`` of each package (default: every installed app)
        when the app first needs its tasks; with ``force``, now. djqueue imports the ``tasks``
        module of every installed app in any case; this adds other packages and names."""
        _Setup.discovery.append((packages, related_name))
        # The App imports what was asked when it first needs its tasks; one that has already
        # done so (this is called at run time) or is asked to (force) imports now.
        if force or ("djqueue.client.base" in sys.modules and _app().discovered):
            _app().autodiscover()

    def task(self, *args: Any, **options: Any) -> Any:
        """``@app.task`` and ``@app.task(**options)``; before Django's app registry is ready
        the task is a :class:`PendingTask` that the App registers when it discovers tasks."""
        if django_apps.apps_ready:
            return _app().task(*args, **options)

        def declare(fun: Callable[..., Any]) -> PendingTask:
            pending = PendingTask(fun, options)
            _Setup.pending.append(pending)
            return pending

        if len(args) == 1 and callable(args[0]) and not options:
            return declare(args[0])
        if args:
            raise TypeError("@app.task takes the function, or only keyword options")
        return declare

    def register_task(self, task: Task) -> Task:
        """Register a task instance, as Celery's ``app.register_task(MyTask())`` does for a
        class-based task: it is named ``<module>.<class>`` unless its class gives a name."""
        task_class = type(task)
        if not task.name:
            task.name = f"{task_class.__module__}.{task_class.__name__}"
        task.app = _app()
        return _app().register(task)


current_app = Celery()
"""The handle on the process's app, as Celery's ``from celery import current_app``."""
