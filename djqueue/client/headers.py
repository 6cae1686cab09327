"""Call options that travel as message headers, under Celery's header names.

A message's body may carry ``"headers"``, a dict the worker lays over ``task.request`` (see
:mod:`djqueue.client.context`). It is written only when a call gives one of these options, so a
plain call's message is unchanged. To carry another option, add it to :data:`HEADER_OPTIONS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..exceptions import DecodeError
from ..serialization import loads, may_hold

#: ``apply_async`` option -> header name. A value of None or False is the default and is not sent.
HEADER_OPTIONS: dict[str, str] = {
    "shadow": "shadow",
    "ignore_result": "ignore_result",
    "reply_to": "reply_to",
    "correlation_id": "correlation_id",
}


def take_headers(options: dict[str, Any]) -> dict[str, Any] | None:
    """Pop from ``options`` the ones that travel as headers (``headers=``, the custom headers,
    and those of :data:`HEADER_OPTIONS`); return the message's headers, or None for none."""
    found: dict[str, Any] | None = None
    custom = options.pop("headers", None)
    if custom:
        if not isinstance(custom, Mapping) or not all(isinstance(k, str) for k in custom):
            raise TypeError(f"headers must be a mapping with str keys, not {custom!r}")
        found = dict(custom)
    for option, header in HEADER_OPTIONS.items():
        if option in options:
            value = options.pop(option)
            if value is not None and value is not False:
                if found is None:
                    found = {}
                found[header] = value
    return found


def shadow_of(body: str, content_type: str, accept: Iterable[str]) -> str | None:
    """The ``shadow`` header of a message's body (the name Celery's worker shows for the call),
    or None. Only a body that may hold one is decoded: the worker asks for every message."""
    if not may_hold(body, content_type, "shadow"):
        return None
    try:
        payload = loads(body, content_type, accept)
    except DecodeError:  # the pool refuses it with the reason; the name shown is the task's
        return None
    headers = payload.get("headers") if isinstance(payload, dict) else None
    shadow = headers.get("shadow") if isinstance(headers, dict) else None
    return shadow if isinstance(shadow, str) and shadow else None
