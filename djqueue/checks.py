"""Django system checks for djqueue's settings (``python manage.py check``).

Errors (``djqueue.E0xx``) are values djqueue cannot work with; warnings (``djqueue.W0xx``) are
settings that are probably not doing what their author meant.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator, Mapping
from typing import Any

from django.conf import settings
from django.core import checks
from django.db import connections

from .client import annotations, routing
from . import setting_names
from .conf import ALIASES, CELERY_PREFIXES, DEFAULTS, Settings
from .exceptions import ImproperlyConfigured
from .backends import CacheBackend, backend_class
from .broker import VENDORS, supports
from .client.base import app
from .client.call_checks import check_time_limits
from .client.rates import parse_rate, task_rate
from .worker.pools import POOLS
from .worker import limits
from .serialization import CONTENT_TYPES

SERIALIZERS = ", ".join(CONTENT_TYPES)


def _conf() -> Settings:
    return app.conf


@checks.register("djqueue")
def check_spellings(**kwargs: Any) -> list[checks.CheckMessage]:
    """E001: Celery 3.1 names mixed with Celery ≥4 names (Celery refuses that too). W001: Celery
    settings djqueue does not use."""
    conf, messages = _conf(), []
    old, new = setting_names.mixed(set(dir(settings)))
    if old:
        renames = ", ".join(f"{name} -> {setting_names.renamed(name)}" for name in old)
        messages.append(checks.Error(
            f"Celery's old and new setting names are mixed: {', '.join(old)} (Celery 3.1) with "
            f"{', '.join(new)} (Celery ≥ 4).",
            hint=f"Use one set of names; to use the new ones, rename {renames}.",
            id="djqueue.E001",
        ))
    for name in sorted(dir(settings)):
        if name.startswith(CELERY_PREFIXES) and name not in DEFAULTS and name not in ALIASES:
            messages.append(checks.Warning(
                f"{name} is set, but djqueue does not use it.",
                hint="Remove it, or see the README's configuration reference for the settings "
                "djqueue reads.",
                id="djqueue.W001",
            ))
    broker_url = str(conf.BROKER_URL or "django://")
    if not broker_url.startswith("django://"):
        messages.append(checks.Warning(
            f"BROKER_URL = {broker_url!r} is ignored: djqueue's broker is the Django database "
            f"{conf.broker_alias!r}.",
            hint="Remove BROKER_URL, or set it to 'django://' (or 'django://<database alias>').",
            id="djqueue.W002",
        ))
    return messages


def _serializer_errors(where: str, name: object, accept: set[str]) -> Iterator[checks.CheckMessage]:
    if name not in CONTENT_TYPES:
        yield checks.Error(
            f"{where} = {name!r} is not a serializer djqueue has.",
            hint=f"Use one of: {SERIALIZERS}.", id="djqueue.E003",
        )
    elif name not in accept and CONTENT_TYPES[name] not in accept:
        yield checks.Error(
            f"{where} = {name!r}, but CELERY_ACCEPT_CONTENT does not list it: workers would "
            "refuse these messages or results.",
            hint=f"Add {name!r} to CELERY_ACCEPT_CONTENT, or use a serializer it lists.",
            id="djqueue.E004",
        )


@checks.register("djqueue")
def check_serializers(**kwargs: Any) -> list[checks.CheckMessage]:
    """E003 unknown serializer, E004 a serializer that CELERY_ACCEPT_CONTENT leaves out."""
    conf, messages = _conf(), []
    accept_setting = conf.CELERY_ACCEPT_CONTENT or []
    if isinstance(accept_setting, str):
        accept_setting = [accept_setting]
    accept = set(accept_setting)
    known = set(CONTENT_TYPES) | set(CONTENT_TYPES.values())
    for item in sorted(accept - known, key=str):
        messages.append(checks.Error(
            f"CELERY_ACCEPT_CONTENT lists {item!r}, which is not a serializer djqueue has.",
            hint=f"Use serializer names ({SERIALIZERS}) or their content types.",
            id="djqueue.E003",
        ))
    for setting in ("CELERY_TASK_SERIALIZER", "CELERY_RESULT_SERIALIZER"):
        messages += _serializer_errors(setting, getattr(conf, setting), accept)
    for task in _tasks(messages):
        if task.serializer is not None:
            messages += _serializer_errors(f"The serializer of task {task.name!r}",
                                           task.serializer, accept)
    return messages


def _tasks(messages: list[checks.CheckMessage]) -> list[Any]:
    """The registered tasks (with annotations applied); problems go into ``messages``."""
    try:
        names = list(app.tasks)
    except ImportError as exc:
        messages.append(checks.Error(
            f"A task module cannot be imported: {exc}",
            hint="Check CELERY_IMPORTS and the tasks.py modules of installed apps.",
            id="djqueue.E010",
        ))
        return []
    tasks = []
    for name in names:
        try:
            tasks.append(app.tasks[name])
        except (ImproperlyConfigured, ImportError) as exc:
            messages.append(checks.Error(str(exc), hint="Fix CELERY_ANNOTATIONS.",
                                         id="djqueue.E007"))
    return tasks


@checks.register("djqueue")
def check_rate_limits(**kwargs: Any) -> list[checks.CheckMessage]:
    """E002: a rate limit that cannot be parsed."""
    conf, messages = _conf(), []
    hint = "Write rate limits as 'N/s', 'N/m', 'N/h' or a number of tasks per second."
    try:
        parse_rate(conf.CELERY_DEFAULT_RATE_LIMIT)
    except ImproperlyConfigured as exc:
        messages.append(checks.Error(f"CELERY_DEFAULT_RATE_LIMIT: {exc}", hint=hint,
                                     id="djqueue.E002"))
    for task in _tasks(messages):
        if task.rate_limit is not None:
            try:
                parse_rate(task_rate(task))
            except ImproperlyConfigured as exc:
                messages.append(checks.Error(f"Task {task.name!r}: {exc}", hint=hint,
                                             id="djqueue.E002"))
    return messages + _flow_limits(conf)


def _flow_limits(conf: Settings) -> list[checks.CheckMessage]:
    """E013: a rate-limit scope or a task's concurrency limit the worker would refuse."""
    hint = f"A rate limit's scope is one of {', '.join(limits.SCOPES)}; a concurrency limit a " \
           "whole number of at least 1."
    if conf.DJQUEUE_RATE_LIMIT_SCOPE not in limits.SCOPES:
        return [checks.Error(f"DJQUEUE_RATE_LIMIT_SCOPE = {conf.DJQUEUE_RATE_LIMIT_SCOPE!r} is "
                             "not a scope djqueue has.", hint=hint, id="djqueue.E013")]
    try:
        limits.validate(app)
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), hint=hint, id="djqueue.E013")]
    except ImportError:
        pass  # E010, above
    return []


@checks.register("djqueue")
def check_backend_and_broker(**kwargs: Any) -> list[checks.CheckMessage]:
    """E005 unknown result backend, E006 a broker alias DATABASES lacks, W004 a database of a
    vendor that cannot be the broker, E008 a cache alias that CACHES lacks, E011 an unknown time
    zone."""
    conf, messages = _conf(), []
    url = "://" in str(conf.CELERY_RESULT_BACKEND)
    try:
        backend = backend_class(conf.CELERY_RESULT_BACKEND)
        if url:
            backend.from_conf(conf)  # a malformed URL; nothing connects yet
    except (ImproperlyConfigured, ValueError) as exc:
        messages.append(checks.Error(str(exc), hint="djqueue keeps results in the database, in "
                                     "Django's cache, in Redis or in Memcached.", id="djqueue.E005"))
    else:
        alias = conf.CELERY_CACHE_BACKEND
        if backend is CacheBackend and not url and alias not in settings.CACHES:
            messages.append(checks.Error(
                f"CELERY_CACHE_BACKEND = {alias!r} is not a key of CACHES.",
                hint=f"Use one of: {', '.join(settings.CACHES)}.", id="djqueue.E008",
            ))
    using = conf.broker_alias
    if using not in settings.DATABASES:
        messages.append(checks.Error(
            f"The broker database {using!r} (from BROKER_URL) is not in DATABASES.",
            hint="Use 'django://' or 'django://<alias>' with an alias of DATABASES.",
            id="djqueue.E006",
        ))
    elif not supports(using):
        # A warning here: an error would stop every management command of the project (migrate,
        # runserver), which need no broker. `manage.py celery` refuses it (broker_refusal).
        messages.append(checks.Warning(
            f"{_unsupported(using)} delay() and `manage.py celery` refuse it.",
            hint=_VENDOR_HINT, id="djqueue.W004",
        ))
    if conf.CELERY_TIMEZONE:
        try:
            zoneinfo.ZoneInfo(str(conf.CELERY_TIMEZONE))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            messages.append(checks.Error(
                f"CELERY_TIMEZONE = {conf.CELERY_TIMEZONE!r} is not a known time zone.",
                hint="Use an IANA name such as 'Europe/London', or leave it unset for UTC.",
                id="djqueue.E011",
            ))
    return messages


_VENDOR_HINT = f"Use {', '.join(sorted(VENDORS))} for the broker database."


def _unsupported(using: str) -> str:
    vendor = connections[using].vendor
    return f"Database {using!r} is {vendor}, which cannot serve as djqueue's broker:"


def broker_refusal() -> str | None:
    """Why `manage.py celery` cannot run here (the broker database is of a vendor djqueue does
    not support, djqueue.E006), or None."""
    using = _conf().broker_alias
    if using not in settings.DATABASES or supports(using):
        return None  # a missing alias is E006 of the system checks already
    return f"(djqueue.E006) {_unsupported(using)} it cannot be used.\n\tHINT: {_VENDOR_HINT}"


@checks.register("djqueue")
def check_routing(**kwargs: Any) -> list[checks.CheckMessage]:
    """E007 malformed annotations, E009 malformed routes or queues, W003 a route or annotation
    naming a task that is not registered."""
    conf, messages = _conf(), []
    registered = {task.name for task in _tasks(messages)}
    named: dict[str, set[str]] = {"CELERY_ROUTES": set(), "CELERY_ANNOTATIONS": set()}
    try:
        for router in routing.routers(conf.CELERY_ROUTES):
            if isinstance(router, Mapping):
                named["CELERY_ROUTES"] |= {k for k in router if not any(c in k for c in "*?[")}
    except (ImportError, ImproperlyConfigured) as exc:
        messages.append(checks.Error(f"CELERY_ROUTES: {exc}", hint="See the README on routing.",
                                     id="djqueue.E009"))
    try:
        named["CELERY_ANNOTATIONS"] = annotations.named_tasks(conf.CELERY_ANNOTATIONS)
    except (ImportError, ImproperlyConfigured) as exc:
        messages.append(checks.Error(f"CELERY_ANNOTATIONS: {exc}",
                                     hint="See the README on annotations.", id="djqueue.E007"))
    try:
        routing.worker_queues(conf)
    except ImproperlyConfigured as exc:
        messages.append(checks.Error(str(exc), hint="List queue names.", id="djqueue.E009"))
    for setting, names in named.items():
        for name in sorted(names - registered):
            messages.append(checks.Warning(
                f"{setting} names task {name!r}, which is not registered.",
                hint="Check the spelling, or make the module that defines it a tasks.py of an "
                "installed app or list it in CELERY_IMPORTS.",
                id="djqueue.W003",
            ))
    return messages


@checks.register("djqueue")
def check_worker(**kwargs: Any) -> list[checks.CheckMessage]:
    """E012: worker settings that the worker would refuse (pool, concurrency, prefetch, batch
    window)."""
    conf, messages = _conf(), []
    if conf.CELERYD_POOL not in POOLS:
        messages.append(checks.Error(
            f"CELERYD_POOL = {conf.CELERYD_POOL!r} is not a pool djqueue has.",
            hint=f"Use one of: {', '.join(POOLS)}.", id="djqueue.E012",
        ))
    for setting in ("CELERYD_CONCURRENCY", "CELERYD_PREFETCH_MULTIPLIER"):
        value = getattr(conf, setting)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            messages.append(checks.Error(
                f"{setting} = {value!r} is not a whole number of at least 0.",
                hint="0 means the default (the CPU count for concurrency, 1 for prefetch).",
                id="djqueue.E012",
            ))
    window = conf.DJQUEUE_POOL_BATCH_WINDOW
    if not isinstance(window, (int, float)) or isinstance(window, bool) or not 0 <= window <= 1:
        messages.append(checks.Error(
            f"DJQUEUE_POOL_BATCH_WINDOW = {window!r} is not a number of seconds from 0 to 1.",
            hint="It bounds the expected work queued in a pool process behind its running task "
                 "(default 0.02); 0 sends one task at a time.",
            id="djqueue.E012",
        ))
    limits = [("CELERYD_TASK_SOFT_TIME_LIMIT / CELERYD_TASK_TIME_LIMIT",
               conf.CELERYD_TASK_SOFT_TIME_LIMIT, conf.CELERYD_TASK_TIME_LIMIT)]
    limits += [(f"Task {t.name!r}", t.soft_time_limit, t.time_limit) for t in _tasks(messages)]
    for where, soft, hard in limits:
        try:
            check_time_limits(soft, hard, where)
        except (ValueError, TypeError) as exc:
            messages.append(checks.Error(str(exc), hint="Give soft_time_limit a value below "
                                         "time_limit (seconds), or leave one unset.",
                                         id="djqueue.E012"))
    deliveries = conf.DJQUEUE_MAX_DELIVERIES
    if deliveries is not None and (not isinstance(deliveries, int) or isinstance(deliveries, bool)
                                   or deliveries < 1):
        messages.append(checks.Error(
            f"DJQUEUE_MAX_DELIVERIES = {deliveries!r} is not a whole number of at least 1.",
            hint="It bounds how many times an acks_late task whose process is lost runs again "
                 "(default 5); None removes the bound.",
            id="djqueue.E012",
        ))
    return messages


@checks.register("djqueue")
def check_listen_database(**kwargs: Any) -> list[checks.CheckMessage]:
    """E014: DJQUEUE_LISTEN_DATABASE names no alias of DATABASES, or one with another engine
    than the broker's."""
    conf = _conf()
    listen, using = conf.DJQUEUE_LISTEN_DATABASE, conf.broker_alias
    if not listen:
        return []
    hint = ("Name an alias of DATABASES that connects to the broker's PostgreSQL directly (not "
            "through PgBouncer): docs/deployment.md, 'PgBouncer'.")
    if listen not in settings.DATABASES:
        return [checks.Error(f"DJQUEUE_LISTEN_DATABASE = {listen!r} is not in DATABASES.",
                             hint=hint, id="djqueue.E014")]
    engines = [settings.DATABASES.get(alias, {}).get("ENGINE") for alias in (listen, using)]
    if using in settings.DATABASES and engines[0] != engines[1]:
        return [checks.Error(
            f"DJQUEUE_LISTEN_DATABASE = {listen!r} uses {engines[0]}, the broker database "
            f"{using!r} {engines[1]}.", hint=hint, id="djqueue.E014")]
    return []
