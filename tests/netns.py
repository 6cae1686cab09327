"""Test hosts: network namespaces joined to this machine by veth pairs (``ip netns``, as root), so
that workers reach the database over a network link the test can cut. Each host gets a /30 of its
own in 10.<200 + pid % 50>.<n>.0 on veths named after this process, and nothing else of the
machine's network is touched. Standard library only: bench/hosts.py uses it outside pytest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def available() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass(frozen=True)
class Host:
    namespace: str
    link: str  # this machine's end of the veth pair: down is a cut cable
    address: str  # this machine's address on the link, which the host reaches it at

    def command(self, *args: str) -> list[str]:
        """``args`` run inside the host."""
        return ["ip", "netns", "exec", self.namespace, *args]

    def cut(self) -> None:
        _ip("link", "set", self.link, "down")

    def mend(self) -> None:
        _ip("link", "set", self.link, "up")


@contextmanager
def hosts(count: int) -> Iterator[list[Host]]:
    """``count`` hosts, removed again on exit."""
    tag, net = os.getpid() % 100000, 200 + os.getpid() % 50
    made: list[Host] = []
    try:
        for n in range(1, count + 1):
            namespace, link, peer = f"djq{tag}h{n}", f"dq{tag}h{n}a", f"dq{tag}h{n}b"
            _ip("netns", "add", namespace)
            host = Host(namespace, link, f"10.{net}.{n}.1")
            made.append(host)
            _ip("link", "add", link, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", namespace)
            _ip("addr", "add", f"{host.address}/30", "dev", link)
            _ip("link", "set", link, "up")
            _ip("netns", "exec", namespace, "ip", "addr", "add", f"10.{net}.{n}.2/30", "dev", peer)
            _ip("netns", "exec", namespace, "ip", "link", "set", peer, "up")
            _ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        yield made
    finally:
        for host in made:
            subprocess.run(["ip", "link", "del", host.link], capture_output=True, timeout=30)
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True, timeout=30)


def network(hosts_: list[Host]) -> str:
    """The address range of ``hosts_`` (for pg_hba.conf)."""
    first = hosts_[0].address.split(".")
    return f"{first[0]}.{first[1]}.0.0/16"
