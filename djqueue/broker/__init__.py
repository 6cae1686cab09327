"""The broker: the message table's statements behind one interface, one module per database vendor.

:func:`operations` gives the :class:`~djqueue.broker.base.Operations` of a database alias: the
class :data:`VENDORS` registers for its ``connection.vendor``. Each vendor module
(:mod:`~djqueue.broker.mysql`, :mod:`~djqueue.broker.postgresql`, :mod:`~djqueue.broker.sqlite`)
holds all of that vendor's SQL and is the only place in djqueue that depends on the vendor;
callers ask the operations object and never test the vendor themselves. Adding a vendor is adding its module and a line here.

The other modules: :mod:`~djqueue.broker.base` (the interface, its defaults and shared pieces),
:mod:`~djqueue.broker.statements` (the statements alike on every vendor, built from the vendor's
hooks), :mod:`~djqueue.broker.rows` (rows as Python sees them), :mod:`~djqueue.broker.listen`
(waking idle workers) and :mod:`~djqueue.broker.monitor` (read-only figures for the admin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import connections
from django.utils.module_loading import import_string

from ..exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from .base import Operations

#: Django's ``connection.vendor`` -> the dotted path of its :class:`Operations` subclass.
VENDORS: dict[str, str] = {
    "mysql": "djqueue.broker.mysql.MySQLOperations",
    "postgresql": "djqueue.broker.postgresql.PostgreSQLOperations",
    "sqlite": "djqueue.broker.sqlite.SQLiteOperations",
}

_operations: dict[tuple[str, str], Operations] = {}


def operations(using: str = "default") -> Operations:
    """The broker's statements on the database ``using`` (one object per alias and vendor).

    Raises :class:`~djqueue.exceptions.ImproperlyConfigured` for a database no vendor module
    serves.
    """
    vendor = connections[using].vendor
    try:
        return _operations[using, vendor]
    except KeyError:
        pass
    if vendor not in VENDORS:
        raise ImproperlyConfigured(
            f"Database {using!r} is {vendor}; djqueue's broker supports "
            f"{', '.join(VENDORS)}."
        )
    found = _operations[using, vendor] = import_string(VENDORS[vendor])(using)
    return found


def supports(using: str) -> bool:
    """Whether the database ``using`` can be the broker."""
    return connections[using].vendor in VENDORS
