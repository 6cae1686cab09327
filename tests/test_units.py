"""Pieces that need no database: serialization, routing, the task decorator, settings."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest
from django.test import override_settings

from djqueue import states
from djqueue.broker.sqlite import SQLiteOperations
from djqueue.client.base import App
from djqueue.exceptions import ContentDisallowed, DecodeError, EncodeError, RemoteTaskError
from djqueue.client.routing import route
from djqueue.serialization import (
    dumps, exception_from_data, exception_to_data, loads, loads_many,
)


def test_json_round_trip_keeps_types() -> None:
    value = {
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2026, 1, 2),
        "amount": decimal.Decimal("1.10"),
        "id": uuid.UUID(int=5),
        "raw": b"\x00\xff",
        "list": [1, "two", None, 3.5],
    }
    content_type, text = dumps(value)
    assert content_type == "application/json"
    assert loads(text, content_type, ["json"]) == value


def test_unserialisable_value_is_a_clear_encode_error() -> None:
    with pytest.raises(EncodeError, match="object is not JSON serializable"):
        dumps({"x": object()})


def test_pickle_is_refused_unless_accepted() -> None:
    content_type, text = dumps([1, 2], "pickle")
    with pytest.raises(ContentDisallowed, match="CELERY_ACCEPT_CONTENT"):
        loads(text, content_type, ["json"])
    assert loads(text, content_type, ["json", "pickle"]) == [1, 2]


def test_corrupt_payload_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="Cannot decode json payload"):
        loads("{not json", "application/json", ["json"])


def test_loads_many_decodes_each_payload_as_loads_does() -> None:
    """What a chord's body is called with: plain and tagged JSON, pickle, missing values; a
    refused or corrupt payload raises what loads raises."""
    when = datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)
    payloads = [dumps(5)[::-1], dumps({"when": when})[::-1], dumps([1, 2], "pickle")[::-1],
                (None, "")]
    assert loads_many(payloads, ["json", "pickle"]) == [5, {"when": when}, [1, 2], None]
    with pytest.raises(ContentDisallowed):
        loads_many(payloads, ["json"])
    with pytest.raises(DecodeError, match="Cannot decode json payload"):
        loads_many([("7", "application/json"), ("{not json", "application/json")], ["json"])


def test_exception_round_trip_uses_the_original_class_when_importable() -> None:
    exc = exception_from_data(exception_to_data(KeyError("missing")))
    assert type(exc) is KeyError and exc.args == ("missing",)


def test_exception_of_unknown_class_gets_a_named_stand_in() -> None:
    data = {"exc_type": "Boom", "exc_module": "not_imported_anywhere", "exc_message": ["bad"]}
    exc = exception_from_data(data)
    assert isinstance(exc, RemoteTaskError)
    assert type(exc).__name__ == "Boom"
    assert "not_imported_anywhere.Boom" in str(exc) and "bad" in str(exc)


def _route(**overrides: object) -> tuple[str, int]:
    options: dict[str, object] = dict(
        routes=None, call_queue=None, call_priority=None, task_options={},
        default_queue="celery", default_priority=None,
    )
    options.update(overrides)
    return route("tasks.add", (), {}, **options)  # type: ignore[arg-type]


def test_routing_precedence() -> None:
    assert _route() == ("celery", 0)
    assert _route(task_options={"queue": "own"}) == ("own", 0)
    assert _route(routes={"tasks.add": "low-priority"}, task_options={"queue": "own"}) == (
        "low-priority", 0)
    assert _route(routes={"tasks.*": {"queue": "glob", "priority": 5}}) == ("glob", 5)
    assert _route(routes={"tasks.add": "routed"}, call_queue="call", call_priority=9) == ("call", 9)
    router = lambda name, args, kwargs: "by-callable" if name == "tasks.add" else None  # noqa: E731
    assert _route(routes=[{"other": "x"}, router]) == ("by-callable", 0)


def test_priority_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="0 to 255"):
        _route(call_priority=256)


def test_task_decorator_bare_and_with_options() -> None:
    app = App()

    @app.task
    def plain(x: int) -> int:
        return x * 2

    @app.task(name="custom.name", bind=True, queue="q", acks_late=True, max_retries=7)
    def bound(self, x: int) -> str:
        return f"{self.name}:{x}"

    assert plain.name == f"{__name__}.plain"
    assert plain(4) == 8  # a direct call runs in-process
    assert bound(1) == "custom.name:1"
    assert (bound.queue, bound.acks_late, bound.max_retries) == ("q", True, 7)
    assert set(app._tasks) == {plain.name, "custom.name"}
    result = plain.apply((5,))
    assert result.get() == 10 and result.state == states.SUCCESS


def test_unknown_task_option_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown option"):
        App().task(qeue="typo")(lambda: None)


def test_eager_apply_keeps_the_exception() -> None:
    app = App()

    @app.task
    def boom() -> None:
        raise ValueError("no")

    result = boom.apply()
    assert result.failed() and isinstance(result.result, ValueError)
    assert "ValueError: no" in result.traceback
    with pytest.raises(ValueError):
        result.get()
    assert isinstance(result.get(propagate=False), ValueError)


def test_settings_defaults_aliases_and_overrides() -> None:
    conf = App().conf
    assert conf.CELERY_DEFAULT_QUEUE == "celery"
    with override_settings(CELERY_TASK_DEFAULT_QUEUE="from-new-name"):
        assert conf.CELERY_DEFAULT_QUEUE == "from-new-name"
    with override_settings(CELERY_DEFAULT_QUEUE="from-settings"):
        assert conf.CELERY_DEFAULT_QUEUE == "from-settings"
        conf.CELERY_DEFAULT_QUEUE = "runtime"
        assert conf.CELERY_DEFAULT_QUEUE == "runtime"
    conf.update(CELERY_TASK_SERIALIZER="pickle")
    assert conf.CELERY_TASK_SERIALIZER == "pickle"
    with pytest.raises(AttributeError):
        conf.NOT_A_SETTING


def test_public_names_are_the_objects_not_modules() -> None:
    """``from djqueue import app, task`` must give the App and the decorator even after the modules
    defining them were imported (a submodule of the same name would shadow them)."""
    import djqueue.client.base
    import djqueue.decorators
    from djqueue import App, AsyncResult, app, group, shared_task, signature, task

    assert isinstance(app, App) and app is djqueue.client.base.app
    assert task is djqueue.decorators.task and shared_task is djqueue.decorators.shared_task
    assert callable(group) and callable(signature) and isinstance(AsyncResult, type)


# The broker's vendor registry (djqueue/broker/__init__.py).


class OtherVendorOperations(SQLiteOperations):
    """A vendor djqueue does not know, registered from outside (as a new vendor module is)."""

    vendor = "othervendor"


@pytest.fixture
def other_vendor(monkeypatch: pytest.MonkeyPatch) -> str:
    """The default database as a vendor no module is registered for."""
    from django.db import connection

    import djqueue.broker

    monkeypatch.setattr(djqueue.broker, "_operations", {})
    monkeypatch.setattr(connection, "vendor", "othervendor")
    return "othervendor"


def test_a_database_no_vendor_module_serves_is_refused(other_vendor: str) -> None:
    from djqueue.broker import operations
    from djqueue.checks import broker_refusal, check_backend_and_broker
    from djqueue.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="is othervendor; djqueue's broker supports "
                                                   "mysql, postgresql, sqlite"):
        operations("default")
    # A warning for the project's checks (migrate, runserver need no broker); an error for
    # `manage.py celery`, which does.
    assert [m.id for m in check_backend_and_broker()] == ["djqueue.W004"]
    assert broker_refusal().startswith("(djqueue.E006) Database 'default' is othervendor")


def test_a_vendor_is_its_operations_class_and_a_line_in_the_registry(
    other_vendor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import djqueue.broker
    from djqueue.checks import check_backend_and_broker

    monkeypatch.setitem(djqueue.broker.VENDORS, other_vendor,
                        f"{__name__}.OtherVendorOperations")
    broker = djqueue.broker.operations("default")
    assert type(broker) is OtherVendorOperations and broker.using == "default"
    assert djqueue.broker.operations("default") is broker  # one per alias and vendor
    assert check_backend_and_broker() == []
