"""argparse types shared by the subcommands. Each has a readable ``__name__``, which argparse
shows in its error ("invalid positive integer value: '0'")."""

from __future__ import annotations


def names(value: str) -> list[str]:
    """Comma-separated names (queues, nodes): at least one."""
    found = [name.strip() for name in value.split(",") if name.strip()]
    if not found:
        raise ValueError("no name given")
    return found


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def positive_seconds(value: str) -> float:
    seconds = float(value)
    if seconds <= 0:
        raise ValueError("must be more than 0")
    return seconds


names.__name__ = "comma-separated names"
positive_int.__name__ = "positive integer"
positive_seconds.__name__ = "positive number of seconds"
