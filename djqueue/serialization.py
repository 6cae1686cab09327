"""Encoding of task arguments, results and exceptions.

Payloads are stored as text with a content type beside them. ``json`` (the default) keeps
``datetime``, ``date``, ``time``, ``Decimal``, ``UUID`` and ``bytes`` by tagging them, so a task
receives the types it was called with. ``pickle`` is available for trusted deployments and is only
decoded when listed in ``CELERY_ACCEPT_CONTENT``.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import json.encoder
import pickle
import re
import sys
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from .exceptions import ContentDisallowed, DecodeError, EncodeError, RemoteTaskError

CONTENT_TYPES: dict[str, str] = {
    "json": "application/json",
    "pickle": "application/x-python-serialize",
}
_NAMES_BY_CONTENT_TYPE = {v: k for k, v in CONTENT_TYPES.items()}

_TYPE_KEY = "__type__"
_VALUE_KEY = "__value__"


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime.datetime):
        return {_TYPE_KEY: "datetime", _VALUE_KEY: obj.isoformat()}
    if isinstance(obj, datetime.date):
        return {_TYPE_KEY: "date", _VALUE_KEY: obj.isoformat()}
    if isinstance(obj, datetime.time):
        return {_TYPE_KEY: "time", _VALUE_KEY: obj.isoformat()}
    if isinstance(obj, decimal.Decimal):
        return {_TYPE_KEY: "decimal", _VALUE_KEY: str(obj)}
    if isinstance(obj, uuid.UUID):
        return {_TYPE_KEY: "uuid", _VALUE_KEY: str(obj)}
    if isinstance(obj, bytes):
        return {_TYPE_KEY: "bytes", _VALUE_KEY: base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_DECODERS = {
    "datetime": datetime.datetime.fromisoformat,
    "date": datetime.date.fromisoformat,
    "time": datetime.time.fromisoformat,
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
    "bytes": lambda value: base64.b64decode(value),
}


def _object_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 2 and _TYPE_KEY in obj and _VALUE_KEY in obj:
        decoder = _DECODERS.get(obj[_TYPE_KEY])
        if decoder is not None:
            return decoder(obj[_VALUE_KEY])
    return obj


def _json_encoder() -> Callable[[Any], str]:
    """The JSON encoding of :func:`dumps`, built once: ``json.dumps`` with options makes a new
    encoder at every call, which costs more than encoding a task's arguments."""
    make = json.encoder.c_make_encoder
    if make is None:  # no C accelerator (e.g. PyPy)
        return json.JSONEncoder(default=_default, separators=(",", ":"), check_circular=False).encode
    # No circular-reference markers (they would be shared by every thread): a circular structure
    # ends in RecursionError instead, which dumps reports as an EncodeError too.
    encode = make(None, _default, json.encoder.encode_basestring_ascii, None, ":", ",", False,
                  False, True)
    return lambda obj: "".join(encode(obj, 0))


encode_json = _json_encoder()


_SURROGATES = re.compile("[\ud800-\udfff]")


def readable(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD.

    A Python str may hold surrogate code points (an exception's message may carry one, e.g. a
    file name ``os.fsdecode`` could not decode); UTF-8 cannot. PostgreSQL refused the round's
    result document that held one, SQLite stored bytes that no read could decode again, and a
    log file may drop the line. Free for ASCII text (``isascii()`` reads a flag of the str); two
    surrogates that form a pair become the character they stand for.
    """
    if text.isascii() or not _SURROGATES.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def readable_json(text: str) -> str:
    """JSON text as :func:`dumps` writes it, with no lone surrogate in its strings (see
    :func:`readable`). That text is ASCII, a surrogate a ``\\udXXX`` escape in it: only a text
    with such an escape (characters beyond U+FFFF have them too) is decoded and encoded again."""
    if "\\ud" not in text:
        return text
    return encode_json(_readable_value(json.loads(text)))


def _readable_value(value: Any) -> Any:
    if isinstance(value, str):
        return readable(value)
    if isinstance(value, list):
        return [_readable_value(item) for item in value]
    if isinstance(value, dict):
        return {readable(key): _readable_value(item) for key, item in value.items()}
    return value


def serializer_names() -> list[str]:
    return list(CONTENT_TYPES)


def content_type_for(serializer: str) -> str:
    try:
        return CONTENT_TYPES[serializer]
    except KeyError:
        raise EncodeError(
            f"Unknown serializer {serializer!r}; choose one of {', '.join(CONTENT_TYPES)}"
        ) from None


def dumps(obj: Any, serializer: str = "json") -> tuple[str, str]:
    """Encode ``obj``; return ``(content_type, text)``. Raises :class:`EncodeError`."""
    content_type = content_type_for(serializer)
    try:
        if serializer == "json":
            return content_type, encode_json(obj)
        return content_type, base64.b64encode(pickle.dumps(obj, protocol=4)).decode("ascii")
    except (TypeError, ValueError, OverflowError, RecursionError, pickle.PicklingError,
            AttributeError) as exc:
        raise EncodeError(f"Cannot serialise with {serializer}: {exc}") from exc


def may_hold(text: str, content_type: str, key: str) -> bool:
    """Whether a payload's text may hold the dict key ``key`` (an ASCII word): a look through its
    bytes, without decoding it, so that a payload is decoded only when it may hold the key."""
    if _NAMES_BY_CONTENT_TYPE.get(content_type) == "json":
        return f'"{key}"' in text
    try:
        return key.encode("ascii") in base64.b64decode(text)  # pickle keeps str keys as UTF-8
    except ValueError:
        return False


def loads(text: str, content_type: str, accept: Iterable[str]) -> Any:
    """Decode a payload; raises :class:`ContentDisallowed` or :class:`DecodeError`."""
    name = _NAMES_BY_CONTENT_TYPE.get(content_type)
    if name is None:
        raise DecodeError(f"Unknown content type {content_type!r}")
    accepted = {CONTENT_TYPES.get(a, a) for a in accept}
    if content_type not in accepted:
        raise ContentDisallowed(
            f"Refusing to decode {name} content: it is not in CELERY_ACCEPT_CONTENT "
            f"({', '.join(sorted(accept)) or 'empty'})"
        )
    try:
        if name == "json":
            if f'"{_TYPE_KEY}"' not in text:  # no tagged value: the C decoder alone, faster
                return json.loads(text)
            return json.loads(text, object_hook=_object_hook)
        return pickle.loads(base64.b64decode(text))
    except Exception as exc:  # any corrupt payload must become one clear error
        raise DecodeError(f"Cannot decode {name} payload: {exc}") from exc


def loads_many(payloads: Iterable[tuple[str | None, str]], accept: Iterable[str]) -> list[Any]:
    """:func:`loads` of each ``(text, content type)`` (a text None: None), a JSON text without a
    tagged value by the C decoder directly, once JSON is found accepted: a chord's body is
    called with every member's result, 10,000 of them 25 ms one :func:`loads` each."""
    accept = list(accept)
    json_type = CONTENT_TYPES["json"]
    direct = json_type in {CONTENT_TYPES.get(a, a) for a in accept}
    tagged = f'"{_TYPE_KEY}"'
    values = []
    for text, content_type in payloads:
        if text is None:
            values.append(None)
            continue
        if direct and content_type == json_type and tagged not in text:
            try:
                values.append(json.loads(text))
                continue
            except ValueError:
                pass  # loads says how it is broken
        values.append(loads(text, content_type, accept))
    return values


# Exceptions travel as plain data so that any serializer can carry them.


def exception_to_data(exc: BaseException) -> dict[str, Any]:
    cls = type(exc)
    return {
        "exc_type": cls.__qualname__,
        "exc_module": cls.__module__,
        "exc_message": [_safe_arg(arg) for arg in exc.args],
    }


def _safe_arg(arg: Any) -> Any:
    if isinstance(arg, str):  # the usual message: kept readable whatever the serializer
        return readable(arg)
    try:
        json.dumps(arg, default=_default)
    except Exception:  # noqa: BLE001 - not JSON (TypeError), too deep (RecursionError), …
        return safe_repr(arg)
    return arg


def safe_repr(value: Any) -> str:
    """``repr(value)``, or a stand-in naming its type when that ``__repr__`` raises: a task's
    value or exception argument is user code, and a failing repr must not take the pool
    process (and the task's outcome) with it."""
    try:
        return repr(value)
    except Exception as exc:  # noqa: BLE001 - any error of user code
        name, error = type(value).__qualname__, type(exc).__name__
        return f"<unrepresentable {name} object: repr() raised {error}>"


def is_exception_data(value: Any) -> bool:
    return isinstance(value, dict) and "exc_type" in value and "exc_module" in value


def exception_from_data(data: dict[str, Any]) -> BaseException:
    """Rebuild a task's exception.

    The original class is used when its module is already imported here (stored data never makes
    this process import a module); otherwise a :class:`RemoteTaskError` stand-in carries the
    original's name.
    """
    name, module = str(data["exc_type"]), str(data["exc_module"])
    args = data.get("exc_message") or []
    if not isinstance(args, (list, tuple)):
        args = [args]
    cls: Any = sys.modules.get(module)
    for part in name.split("."):
        cls = getattr(cls, part, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        try:
            return cls(*args)
        except Exception:  # a constructor with other arguments: fall back to the stand-in
            pass
    stand_in = type(name.rsplit(".", 1)[-1], (RemoteTaskError,), {
        "__module__": module,
        "original_type": f"{module}.{name}",
    })
    return stand_in(*args)
