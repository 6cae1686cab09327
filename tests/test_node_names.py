"""Two live workers with one node name: warned about, as Celery does; a restart after kill -9 is
not such a case."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .conftest import WorkerProcess

pytestmark = pytest.mark.vendor_neutral  # node names are the same logic on every database

WARNING = "is already using this name"


def test_a_second_live_node_of_one_name_is_warned_about_but_a_restart_is_not(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    first = start_worker("-P", "solo", "-n", "twin@%h")
    second = start_worker("-P", "solo", "-n", "twin@%h")
    log = second.log()
    assert WARNING in log and f"pid {first.pid}" in log, log
    assert WARNING not in first.log()

    # Killed outright, both rows keep a fresh heartbeat until the lease runs out; their processes
    # are gone from this host, so the restarted node starts without the warning.
    first.kill()
    second.kill()
    restarted = start_worker("-P", "solo", "-n", "twin@%h")
    assert WARNING not in restarted.log()
    other = start_worker("-P", "solo", "-n", "other@%h")
    assert WARNING not in other.log()
