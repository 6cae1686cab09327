"""Execution pools, by the name ``--pool``/``CELERYD_POOL`` gives them."""

from .base import Plan, Pool, SoloPool, ThreadPool
from .prefork import PreforkPool

POOLS: dict[str, type[Pool]] = {cls.name: cls for cls in (PreforkPool, ThreadPool, SoloPool)}

__all__ = ["POOLS", "Plan", "Pool", "PreforkPool", "SoloPool", "ThreadPool"]
