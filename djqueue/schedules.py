"""Schedules of periodic tasks: ``schedule`` (a fixed interval) and ``crontab``.

Both answer the questions beat asks, for aware datetimes:

- ``following(t)``: the first run time strictly after ``t``;
- ``at_or_after(t)``: the first run time at or after ``t`` (an entry's start time);
- ``latest(due, now)``: the last run time at or before ``now`` of a series that has a run at
  ``due`` (how several missed runs collapse into one).

A crontab's fields keep Celery's meaning (``day_of_week`` 0–6 with Sunday 0, names like
``"mon-fri"``, and ``day_of_week`` and ``day_of_month`` must *both* match, unlike cron(5)).
croniter parses and walks the wall-clock times; this module maps those wall-clock times to instants
in the scheduler's time zone, which is where daylight saving time is decided:

- a wall-clock time the clocks skip in spring runs as if they had not moved yet (02:30 runs at
  03:30 new time), so a daily job is never skipped; it merges with a run already due then;
- a wall-clock time that happens twice in autumn runs once, at its first occurrence, unless the
  crontab runs every hour (``hour="*"``): then it runs in both passes, keeping its rhythm.

A crontab is validated when it is used, not when it is built, so that a bad field in
``CELERYBEAT_SCHEDULE`` is reported by the system checks instead of breaking the settings import.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

# croniter (and the dateutil it brings: half a MB in each worker process) is imported where it is
# used, not here: the models import this module, so every worker process (the parent and each
# prefork child) would carry it, and only beat and schedule validation walk a crontab.
if TYPE_CHECKING:
    from croniter import croniter

#: Larger than any daylight-saving shift (the largest in use is 2 hours): how far wall-clock times
#: and instants can be out of step.
MAX_SHIFT = datetime.timedelta(hours=3)
UTC = datetime.timezone.utc

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_FULL_DAY_NAMES = re.compile(
    r"\b(sun|mon|tue|wed|thu|fri|sat)(day|sday|nesday|rsday|urday)\b"
)

#: Celery's field names in cron(5) order, with the names each field accepts.
CRON_FIELDS: dict[str, tuple[str, ...]] = {
    "minute": (),
    "hour": (),
    "day_of_month": (),
    "month_of_year": MONTH_NAMES,
    "day_of_week": DAY_NAMES,
}


class schedule:  # noqa: N801 - Celery's name
    """Run every ``run_every`` (a ``timedelta`` or a number of seconds)."""

    def __init__(self, run_every: datetime.timedelta | float) -> None:
        if isinstance(run_every, bool) or not isinstance(
            run_every, (datetime.timedelta, int, float)
        ):
            raise TypeError(f"run_every must be a timedelta or seconds, not {run_every!r}")
        if not isinstance(run_every, datetime.timedelta):
            run_every = datetime.timedelta(seconds=run_every)
        if run_every <= datetime.timedelta(0):
            raise ValueError(f"run_every must be positive, not {run_every}")
        self.run_every = run_every

    def __repr__(self) -> str:
        return f"<freq: {self.run_every}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, schedule) and other.run_every == self.run_every

    def following(self, t: datetime.datetime, tz: datetime.tzinfo) -> datetime.datetime:
        return t + self.run_every

    def at_or_after(self, t: datetime.datetime, tz: datetime.tzinfo) -> datetime.datetime:
        return t

    def latest(
        self, due: datetime.datetime, now: datetime.datetime, tz: datetime.tzinfo
    ) -> datetime.datetime:
        return due + ((now - due) // self.run_every) * self.run_every


class crontab:  # noqa: N801 - Celery's name
    """Run at the wall-clock times whose fields all match, as in cron(5) (Celery's meaning)."""

    def __init__(
        self,
        minute: Any = "*",
        hour: Any = "*",
        day_of_week: Any = "*",
        day_of_month: Any = "*",
        month_of_year: Any = "*",
    ) -> None:
        self.minute = _field_text(minute)
        self.hour = _field_text(hour)
        self.day_of_week = _FULL_DAY_NAMES.sub(r"\1", _field_text(day_of_week))
        self.day_of_month = _field_text(day_of_month)
        self.month_of_year = _field_text(month_of_year)

    def __repr__(self) -> str:
        return (
            f"<crontab: {self.minute} {self.hour} {self.day_of_week} {self.day_of_month} "
            f"{self.month_of_year} (m/h/dw/dM/MY)>"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, crontab) and other.fields() == self.fields()

    def fields(self) -> dict[str, str]:
        """Celery's field names -> their text."""
        return {name: getattr(self, name) for name in CRON_FIELDS}

    @property
    def expression(self) -> str:
        """The cron(5) line: minute hour day-of-month month day-of-week."""
        return " ".join(self.fields().values())

    def errors(self) -> dict[str, str]:
        """Field name (or ``"__all__"``) -> what is wrong; empty when the crontab is usable."""
        from croniter import CroniterError, croniter

        errors = {}
        for name, names in CRON_FIELDS.items():
            text = getattr(self, name)
            for token in re.split(r"[,/-]", text):
                if not (token == "*" or token.isdigit() or token in names):
                    errors[name] = (
                        f"{text!r} is not a crontab pattern: use numbers, '*', ',', '-' and '/'"
                        + (f" or the names {', '.join(names)}" if names else "")
                    )
                    break
            else:
                single = ["*"] * len(CRON_FIELDS)
                single[list(CRON_FIELDS).index(name)] = text
                try:
                    croniter.expand(" ".join(single))
                except CroniterError:
                    errors[name] = f"{text!r} is out of range for {name.replace('_', ' ')}"
        if not errors:
            try:
                self._iter(datetime.datetime(2000, 1, 1), backwards=False).get_next(
                    datetime.datetime
                )
            except CroniterError:
                errors["__all__"] = f"{self.expression!r} never matches any date"
        return errors

    def validate(self) -> None:
        errors = self.errors()
        if errors:
            raise ValueError("; ".join(errors.values()))

    # Times.

    def following(self, t: datetime.datetime, tz: datetime.tzinfo) -> datetime.datetime:
        return self._nearest(t, tz, backwards=False)

    def at_or_after(self, t: datetime.datetime, tz: datetime.tzinfo) -> datetime.datetime:
        return self._nearest(t - datetime.timedelta(microseconds=1), tz, backwards=False)

    def latest(
        self, due: datetime.datetime, now: datetime.datetime, tz: datetime.tzinfo
    ) -> datetime.datetime:
        return self._nearest(now + datetime.timedelta(microseconds=1), tz, backwards=True)

    def _iter(self, start: datetime.datetime, backwards: bool) -> croniter:
        from croniter import croniter

        return croniter(self.expression, start, day_or=False, is_prev=backwards)

    def _nearest(
        self, t: datetime.datetime, tz: datetime.tzinfo, backwards: bool
    ) -> datetime.datetime:
        """The first instant strictly after ``t`` (or, backwards, strictly before it).

        Wall-clock times are walked in order, but around a clock change their instants are not
        in order, so the walk goes on until no later wall-clock time can give a nearer instant.
        """
        from croniter import croniter

        self.validate()
        shift = -MAX_SHIFT if backwards else MAX_SHIFT
        wall_start = t.astimezone(tz).replace(tzinfo=None) - shift
        walk = self._iter(wall_start, backwards)
        every_hour = croniter.expand(self.expression)[0][1] == ["*"]
        best: datetime.datetime | None = None
        while True:
            step = walk.get_prev if backwards else walk.get_next
            wall = step(datetime.datetime)
            for instant in _instants(wall, tz, every_hour):
                if (instant < t if backwards else instant > t) and (
                    best is None or (instant > best if backwards else instant < best)
                ):
                    best = instant
            if best is not None:
                bound = wall.replace(tzinfo=tz).astimezone(UTC) - shift
                if (bound < best) if backwards else (bound > best):
                    return best


def _instants(
    wall: datetime.datetime, tz: datetime.tzinfo, every_hour: bool
) -> list[datetime.datetime]:
    """The instants (in UTC: comparisons within one zone ignore ``fold``) at which the clocks of
    ``tz`` show ``wall``; see the module docstring."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    exists = first.astimezone(tz).replace(tzinfo=None) == wall
    if exists and every_hour:
        return [first, second]
    return [first]  # repeated: the first pass; skipped: fold 0 is the pre-change offset


def _field_text(value: Any) -> str:
    if value is None:
        return "*"
    if isinstance(value, bool):
        return str(value)  # reported by errors()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.replace(" ", "").lower() or "*"
    if isinstance(value, Iterable):
        return ",".join(str(item) for item in sorted(value))
    return str(value)


def maybe_schedule(value: Any) -> schedule | crontab:
    """A schedule from a ``CELERYBEAT_SCHEDULE`` entry's ``schedule``: a ``timedelta``, a number
    of seconds, a :class:`schedule` or a :class:`crontab`."""
    if isinstance(value, (schedule, crontab)):
        return value
    return schedule(value)
