"""Calendar windows ("time-shifting"): known event times that scale layer thresholds.

Guarantees kept here:

- pure: no clock reads, no I/O, no APScheduler import (it pulls in asyncio); all
  times are ``int`` unix seconds in UTC, passed in;
- :func:`parse_cron` accepts exactly the crontab texts that APScheduler 3.11's
  ``CronTrigger.from_crontab`` accepts *and* interprets unambiguously, and
  :func:`next_fire` returns the same instants as its ``get_next_fire_time`` in UTC
  (checked against APScheduler as an oracle in ``tests/test_calendar.py``). That
  includes its weekday numbering, which differs from Unix cron: ``0`` is **Monday**
  and ``6`` is Sunday (``7`` is rejected); names ``mon``..``sun`` are safer. Like
  APScheduler 3, a day-of-month *and* a day-of-week restriction must both hold (AND,
  where Vixie cron would OR them). Fire times are at second 0 of a minute, from
  1970 to the end of year 9999;
- texts that APScheduler accepts but silently misreads are rejected with a message
  instead: a step or any suffix after a month/weekday name (``mon-fri/2`` runs
  every weekday there) or after ``last`` (``last-1`` means ``last`` there),
  non-ASCII digits, and specs that can never fire (``0 0 30 2 *``);
- a window is *active* at ``t`` when some occurrence ``o`` has
  ``o - before <= t < o + after`` (start inclusive, end exclusive); overlapping
  occurrences of one window count once; the threshold scale is the product of the
  scales of the active windows, in the order given, and exactly 1.0 outside them;
- the vectorised :func:`threshold_scale_series` equals :func:`threshold_scale`
  element by element (same multiplications in the same order).
"""

from __future__ import annotations

import bisect
import calendar as _gregorian
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MAX_TIME",
    "CalendarWindow",
    "CronError",
    "CronSpec",
    "WindowEdge",
    "active_windows",
    "fire_times",
    "next_fire",
    "parse_cron",
    "prev_fire",
    "threshold_scale",
    "threshold_scale_series",
    "transitions",
]

IntArray: TypeAlias = NDArray[np.int64]
FloatArray: TypeAlias = NDArray[np.float64]
BoolArray: TypeAlias = NDArray[np.bool_]

_MINUTE = 60
_DAY = 86_400
_MINUTES_PER_DAY = 1440
#: Last second of year 9999, the end of APScheduler's (and ``datetime``'s) calendar.
MAX_TIME = 253_402_300_799
_EPOCH = date(1970, 1, 1)
_FIRST_YEAR = 1970
_LAST_YEAR = 9999

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# (name, minimum, maximum) of the five crontab fields, with APScheduler 3's bounds.
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("day_of_week", 0, 6),
)
_ALL = re.compile(r"\*(?:/([0-9]+))?\Z")
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?(?:/([0-9]+))?\Z")
_NAMES = re.compile(r"([a-z]+)(?:-([a-z]+))?\Z", re.ASCII | re.IGNORECASE)


class CronError(ValueError):
    """A crontab text is not valid; ``field`` names the offending field, if any."""

    def __init__(self, message: str, text: str, field: str | None = None) -> None:
        where = f"{field} field: " if field else ""
        super().__init__(f"cron {text!r}: {where}{message}")
        self.message = message
        self.text = text
        self.field = field

    def __reduce__(self) -> tuple[type[CronError], tuple[str, str, str | None]]:
        return type(self), (self.message, self.text, self.field)


def _number(digits: str) -> int:
    """An ASCII-digit string as an int; absurdly long ones become a too-large value
    (``int()`` refuses strings over 4300 digits with a bare ValueError)."""
    return int(digits) if len(digits) <= 9 else 10**9


def _sorted_unique(values: tuple[int, ...], name: str, low: int, high: int) -> None:
    if any(not isinstance(v, int) or isinstance(v, bool) for v in values):
        raise ValueError(f"CronSpec.{name} must hold ints, got {values!r}")
    if list(values) != sorted(set(values)):
        raise ValueError(f"CronSpec.{name} must be sorted and unique, got {values!r}")
    if values and not (low <= values[0] and values[-1] <= high):
        raise ValueError(f"CronSpec.{name} must lie in {low}..{high}, got {values!r}")


@dataclass(frozen=True, slots=True)
class CronSpec:
    """The set of UTC minutes a crontab text matches. Build it with :func:`parse_cron`.

    ``weekdays`` use APScheduler 3's numbering: 0 = Monday .. 6 = Sunday.
    ``last_day`` adds the last day of each month to ``days``.
    """

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    last_day: bool
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    # Derived tables for the searches, fixed at construction.
    _minutes_of_day: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _days_by_length: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)
    _never: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _sorted_unique(self.minutes, "minutes", 0, 59)
        _sorted_unique(self.hours, "hours", 0, 23)
        _sorted_unique(self.days, "days", 1, 31)
        _sorted_unique(self.months, "months", 1, 12)
        _sorted_unique(self.weekdays, "weekdays", 0, 6)
        if not (self.minutes and self.hours and self.months and self.weekdays):
            raise ValueError("CronSpec minutes, hours, months and weekdays must not be empty")
        if not (self.days or self.last_day):
            raise ValueError("CronSpec needs days or last_day")
        minutes_of_day = tuple(h * 60 + m for h in self.hours for m in self.minutes)
        # Candidate days of a month of 28, 29, 30 and 31 days.
        by_length = tuple(
            tuple(
                sorted(
                    {d for d in self.days if d <= length} | ({length} if self.last_day else set())
                )
            )
            for length in (28, 29, 30, 31)
        )
        # Every (month, day) that exists falls on each weekday in some year, so a spec
        # fires at all iff one of its months has a candidate day (Feb may have 29).
        never = not any(
            by_length[(29 if m == 2 else _month_length(2001, m)) - 28] for m in self.months
        )
        object.__setattr__(self, "_minutes_of_day", minutes_of_day)
        object.__setattr__(self, "_days_by_length", by_length)
        object.__setattr__(self, "_never", never)

    def __str__(self) -> str:
        return self.text

    @property
    def never_fires(self) -> bool:
        """True for specs such as ``0 0 30 2 *`` (30 February) that match no instant."""
        return self._never


def _month_length(year: int, month: int) -> int:
    return _gregorian.monthrange(year, month)[1]


def _field_values(text: str, item: str, name: str, low: int, high: int) -> set[int]:
    """Values of one comma-separated item, validated as APScheduler 3 validates them."""
    if item == "":
        raise CronError("empty list item", text, name)
    step_text: str | None
    if match := _ALL.match(item):
        first, last, step_text = low, high, match.group(1)
    elif match := _RANGE.match(item):
        first = _number(match.group(1))
        last_text, step_text = match.group(2), match.group(3)
        # "a" alone is the single value a; "a/n" runs from a to the field maximum.
        last = (
            _number(last_text) if last_text is not None else (first if step_text is None else high)
        )
        if last_text is not None and first > last:
            raise CronError(f"range {item!r} starts after it ends", text, name)
        if first < low or last > high:
            bad = first if first < low else last
            hint = ""
            if name == "day_of_week" and bad == 7:
                hint = " (APScheduler 3 numbers weekdays 0=mon .. 6=sun; write 'sun')"
            raise CronError(f"{bad} is outside {low}-{high}{hint}", text, name)
        # APScheduler checks the step against (last or maximum) - first: a range ending
        # at 0 counts as open-ended there. Mirrored so that the same texts are accepted.
        span = (last if last_text is not None and last != 0 else high) - first
        step_value = _number(step_text) if step_text is not None else 0
        if step_value > span and step_value > 0:  # a zero step is reported below
            raise CronError(f"step {step_value} is larger than the range {span}", text, name)
    elif name == "day" and item.lower() == "last":
        return set()  # handled by the caller as last_day
    elif name in ("month", "day_of_week") and (match := _NAMES.match(item)):
        names = _MONTHS if name == "month" else _WEEKDAYS
        offset = 1 if name == "month" else 0
        numbers = []
        for word in match.groups():
            if word is None:
                continue
            if word.lower() not in names:
                kind = "month" if name == "month" else "weekday"
                raise CronError(
                    f"unknown {kind} name {word!r} (use {names[0]}..{names[-1]})", text, name
                )
            numbers.append(names.index(word.lower()) + offset)
        first, last = numbers[0], numbers[-1]
        if first > last:
            raise CronError(f"range {item!r} starts after it ends", text, name)
        return set(range(first, last + 1))
    else:
        raise CronError(_unrecognised(item, name), text, name)
    step = _number(step_text) if step_text is not None else 1
    if step == 0:
        raise CronError(f"step in {item!r} must be at least 1", text, name)
    if step_text is not None and step > high - low:
        raise CronError(f"step {step} is larger than the range {high - low}", text, name)
    return set(range(first, last + 1, step))


def _unrecognised(item: str, name: str) -> str:
    forms = "'*', '*/n', 'a', 'a-b', 'a/n' or 'a-b/n'"
    if name == "month":
        forms += ", or month names jan..dec ('jan', 'jan-mar')"
    elif name == "day_of_week":
        forms += ", or weekday names mon..sun ('mon', 'mon-fri')"
    elif name == "day":
        forms += ", or 'last'"
    message = f"{item!r} is not one of {forms}"
    lowered = item.lower()
    word = re.match(r"[a-z]+", lowered)
    if word and name in ("month", "day_of_week"):
        names = _MONTHS if name == "month" else _WEEKDAYS
        if word.group() not in names:
            kind = "month" if name == "month" else "weekday"
            return f"unknown {kind} name {word.group()!r} (use {names[0]}..{names[-1]})"
    if (word and name in ("month", "day_of_week")) or (
        name == "day" and lowered.startswith("last")
    ):
        # APScheduler 3 matches names by prefix and drops the rest ("mon-fri/2" is
        # "mon-fri"): refuse rather than run on a different schedule than written.
        return message + "; nothing may follow a name (no step, no suffix)"
    if name == "day" and (lowered in ("l", "?", "lw") or re.fullmatch(r"[0-9]+w", lowered)):
        return message + "; 'L', 'W' and '?' are not supported (write 'last')"
    if name == "day_of_week" and ("#" in item or lowered.endswith("l")):
        return message + "; '#' and 'L' are not supported"
    if re.search(r"[a-z]", lowered) and name in ("minute", "hour", "day"):
        return message + "; names are allowed only in the month and day_of_week fields"
    if any(ch.isdigit() and ch not in "0123456789" for ch in item):
        return message + "; use ASCII digits 0-9"
    return message


def parse_cron(text: str) -> CronSpec:
    """Parse a 5-field crontab text ``minute hour day month day_of_week`` (UTC).

    Raises :class:`CronError` naming the field at fault.
    """
    if not isinstance(text, str):
        raise TypeError(f"cron text must be a str, got {type(text).__name__}")
    parts = text.split()
    if len(parts) != 5:
        hint = "; macros like '@daily' are not supported" if text.strip().startswith("@") else ""
        raise CronError(
            f"expected 5 fields (minute hour day month day_of_week), got {len(parts)}{hint}", text
        )
    values: list[tuple[int, ...]] = []
    last_day = False
    for part, (name, low, high) in zip(parts, _FIELDS, strict=True):
        collected: set[int] = set()
        for item in part.split(","):
            if name == "day" and item.lower() == "last":
                last_day = True
            collected |= _field_values(text, item, name, low, high)
        values.append(tuple(sorted(collected)))
    minutes, hours, days, months, weekdays = values
    spec = CronSpec(text, minutes, hours, days, last_day, months, weekdays)
    if spec.never_fires:
        # APScheduler accepts these and then never runs the job; a window that can
        # never open is a config mistake, so say so at load time.
        raise CronError("never fires: none of the months has any of the days", text, "day")
    return spec


# --------------------------------------------------------------------------- searches


def _split(minute: int) -> tuple[int, int, int, int]:
    """(year, month, day, minute of day) of a minute index since the epoch."""
    day, minute_of_day = divmod(minute, _MINUTES_PER_DAY)
    d = _EPOCH + timedelta(days=day)
    return d.year, d.month, d.day, minute_of_day


def _seconds(year: int, month: int, day: int, minute_of_day: int) -> int:
    days = (date(year, month, day) - _EPOCH).days
    return (days * _MINUTES_PER_DAY + minute_of_day) * _MINUTE


def next_fire(spec: CronSpec, after: int) -> int | None:
    """First fire time strictly after ``after`` (unix seconds), or None if there is none."""
    first_minute = max(after // _MINUTE + 1, 0)
    if spec.never_fires or first_minute * _MINUTE > MAX_TIME:
        return None
    year, month, day, minute_of_day = _split(first_minute)
    months = spec.months
    weekdays = spec.weekdays
    minutes_of_day = spec._minutes_of_day
    while year <= _LAST_YEAR:
        if month in months:
            first_weekday, length = _gregorian.monthrange(year, month)
            candidates = spec._days_by_length[length - 28]
            for dom in candidates[bisect.bisect_left(candidates, day) :]:
                if (first_weekday + dom - 1) % 7 not in weekdays:
                    continue
                start = minute_of_day if dom == day else 0
                index = bisect.bisect_left(minutes_of_day, start)
                if index < len(minutes_of_day):
                    return _seconds(year, month, dom, minutes_of_day[index])
        month, day, minute_of_day = month + 1, 1, 0
        if month == 13:
            year, month = year + 1, 1
    return None


def prev_fire(spec: CronSpec, at_or_before: int) -> int | None:
    """Last fire time at or before ``at_or_before`` (unix seconds), or None."""
    last_minute = min(at_or_before, MAX_TIME) // _MINUTE
    if spec.never_fires or last_minute < 0:
        return None
    year, month, day, minute_of_day = _split(last_minute)
    months = spec.months
    weekdays = spec.weekdays
    minutes_of_day = spec._minutes_of_day
    while year >= _FIRST_YEAR:
        if month in months:
            first_weekday, length = _gregorian.monthrange(year, month)
            candidates = spec._days_by_length[length - 28]
            for dom in reversed(candidates[: bisect.bisect_right(candidates, day)]):
                if (first_weekday + dom - 1) % 7 not in weekdays:
                    continue
                end = minute_of_day if dom == day else _MINUTES_PER_DAY - 1
                index = bisect.bisect_right(minutes_of_day, end) - 1
                if index >= 0:
                    return _seconds(year, month, dom, minutes_of_day[index])
        month, day, minute_of_day = month - 1, 31, _MINUTES_PER_DAY - 1
        if month == 0:
            year, month = year - 1, 12
    return None


def fire_times(spec: CronSpec, start: int, end: int) -> IntArray:
    """All fire times ``t`` with ``start <= t <= end``, ascending, vectorised over days."""
    low, high = max(start, 0), min(end, MAX_TIME)
    if spec.never_fires or low > high:
        return np.empty(0, dtype=np.int64)
    days = np.arange(low // _DAY, high // _DAY + 1, dtype=np.int64)
    dates = days.astype("datetime64[D]")
    month_starts = dates.astype("datetime64[M]")
    month_index = month_starts.astype(np.int64)  # months since 1970-01
    months = month_index % 12 + 1
    first_days = month_starts.astype("datetime64[D]").astype(np.int64)
    day_of_month = days - first_days + 1
    lengths = (month_starts + 1).astype("datetime64[D]").astype(np.int64) - first_days
    weekdays = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    month_ok = np.zeros(13, dtype=np.bool_)
    month_ok[list(spec.months)] = True
    weekday_ok = np.zeros(7, dtype=np.bool_)
    weekday_ok[list(spec.weekdays)] = True
    day_ok = np.zeros(32, dtype=np.bool_)
    day_ok[list(spec.days)] = True
    matches = month_ok[months] & weekday_ok[weekdays] & day_ok[day_of_month]
    if spec.last_day:
        matches |= month_ok[months] & weekday_ok[weekdays] & (day_of_month == lengths)
    offsets = np.asarray(spec._minutes_of_day, dtype=np.int64) * _MINUTE
    times = (days[matches][:, None] * _DAY + offsets[None, :]).ravel()
    result: IntArray = times[(times >= start) & (times <= end)]
    return result


# --------------------------------------------------------------------------- windows


def _check_seconds(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"CalendarWindow.{name} must be an int of seconds, got {value!r}")
    if value < 0:
        raise ValueError(f"CalendarWindow.{name} must be >= 0 seconds, got {value}")


@dataclass(frozen=True, slots=True)
class CalendarWindow:
    """A known event (cron and/or explicit dates) with margins and a threshold scale.

    Active from ``before`` seconds before each occurrence (inclusive) until ``after``
    seconds after it (exclusive). ``dates`` are unix seconds; they are stored sorted
    and without duplicates. With both ``cron`` and ``dates`` the occurrences are the union.
    """

    name: str
    cron: CronSpec | None
    dates: tuple[int, ...]
    before: int
    after: int
    threshold_scale: float

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("CalendarWindow.name must not be empty")
        if self.cron is not None and not isinstance(self.cron, CronSpec):
            raise ValueError(f"CalendarWindow {self.name!r}: cron must be a CronSpec (parse_cron)")
        for when in self.dates:
            if not isinstance(when, int) or isinstance(when, bool) or not 0 <= when <= MAX_TIME:
                raise ValueError(
                    f"CalendarWindow {self.name!r}: dates must be unix seconds in 0..{MAX_TIME}, "
                    f"got {when!r}"
                )
        if self.cron is None and not self.dates:
            raise ValueError(f"CalendarWindow {self.name!r} needs a cron or dates")
        _check_seconds("before", self.before)
        _check_seconds("after", self.after)
        if self.before == 0 and self.after == 0:
            raise ValueError(
                f"CalendarWindow {self.name!r}: before and after are both 0, "
                "so the window would never be active"
            )
        scale = self.threshold_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise ValueError(f"CalendarWindow {self.name!r}: threshold_scale must be a number")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(
                f"CalendarWindow {self.name!r}: threshold_scale must be > 0 and finite, "
                f"got {scale!r}"
            )
        object.__setattr__(self, "dates", tuple(sorted(set(self.dates))))
        object.__setattr__(self, "threshold_scale", float(scale))

    def occurrences(self, start: int, end: int) -> IntArray:
        """Occurrence times ``o`` with ``start <= o <= end``, ascending and unique."""
        dates = np.asarray(self.dates, dtype=np.int64)
        dates = dates[(dates >= start) & (dates <= end)]
        if self.cron is None:
            return dates
        fired = fire_times(self.cron, start, end)
        result: IntArray = np.union1d(fired, dates) if dates.size else fired
        return result

    def is_active(self, t: int) -> bool:
        """Whether some occurrence ``o`` has ``o - before <= t < o + after``."""
        # Equivalently: an occurrence in (t - after, t + before].
        index = bisect.bisect_right(self.dates, t - self.after)
        if index < len(self.dates) and self.dates[index] <= t + self.before:
            return True
        if self.cron is None:
            return False
        fired = next_fire(self.cron, t - self.after)
        return fired is not None and fired <= t + self.before


def active_windows(windows: Sequence[CalendarWindow], t: int) -> tuple[CalendarWindow, ...]:
    """The windows active at ``t``, in the given order."""
    return tuple(window for window in windows if window.is_active(t))


def threshold_scale(windows: Sequence[CalendarWindow], t: int) -> float:
    """Product of the scales of the windows active at ``t``; 1.0 when none is."""
    scale = 1.0
    for window in windows:
        if window.is_active(t):
            scale *= window.threshold_scale
    return scale


def _active_at(window: CalendarWindow, occurrences: IntArray, times: IntArray) -> BoolArray:
    """``window.is_active`` at each of ``times``, given every occurrence that can matter
    (all those in ``[min(times) - after + 1, max(times) + before]``)."""
    upper = np.searchsorted(occurrences, times + window.before, side="right")
    lower = np.searchsorted(occurrences, times - window.after, side="right")
    mask: BoolArray = upper > lower
    return mask


def threshold_scale_series(
    windows: Sequence[CalendarWindow], times: NDArray[np.integer]
) -> FloatArray:
    """:func:`threshold_scale` at each of ``times`` (unix seconds, any order), vectorised.

    Occurrences are enumerated once over the span of ``times`` plus margins and the
    active intervals are found with ``np.searchsorted``.
    """
    stamps = np.asarray(times)
    if stamps.ndim != 1 or not np.issubdtype(stamps.dtype, np.integer):
        raise ValueError(f"times must be a 1-D integer array, got {stamps.dtype} {stamps.shape}")
    stamps = stamps.astype(np.int64, copy=False)
    scale = np.ones(stamps.size, dtype=np.float64)
    if stamps.size == 0:
        return scale
    low, high = int(stamps.min()), int(stamps.max())
    for window in windows:
        occurrences = window.occurrences(low - window.after + 1, high + window.before)
        scale[_active_at(window, occurrences, stamps)] *= window.threshold_scale
    return scale


@dataclass(frozen=True, slots=True)
class WindowEdge:
    """A window starting or ending at ``time``; ``threshold_scale`` is the product in
    force from ``time`` on (after this edge and every other edge at the same time)."""

    time: int
    name: str  # the window's name
    kind: Literal["start", "end"]
    threshold_scale: float

    def __post_init__(self) -> None:
        if self.kind not in ("start", "end"):
            raise ValueError(f"WindowEdge.kind must be 'start' or 'end', got {self.kind!r}")
        if not (math.isfinite(self.threshold_scale) and self.threshold_scale > 0):
            raise ValueError(f"WindowEdge.threshold_scale must be > 0, got {self.threshold_scale}")


def transitions(windows: Sequence[CalendarWindow], start: int, end: int) -> list[WindowEdge]:
    """Window starts and ends at times ``start < time <= end``, in time order.

    Half-open on the left so that successive calls over ``(t0, t1]``, ``(t1, t2]`` ...
    announce every edge exactly once. At one instant ends come before starts; a window
    whose occurrences overlap or touch stays active across them (no end/start pair).
    """
    found: list[tuple[int, int, int, str]] = []
    for position, window in enumerate(windows):
        occurrences = window.occurrences(start - window.after, end + window.before)
        if occurrences.size == 0:
            continue
        candidates = np.unique(
            np.concatenate((occurrences - window.before, occurrences + window.after))
        )
        candidates = candidates[(candidates > start) & (candidates <= end)]
        # An edge is where activity differs between a second and the one before it.
        now = _active_at(window, occurrences, candidates)
        before = _active_at(window, occurrences, candidates - 1)
        for time in candidates[now & ~before]:
            found.append((int(time), 1, position, "start"))
        for time in candidates[~now & before]:
            found.append((int(time), 0, position, "end"))
    found.sort()
    if not found:
        return []
    scales = threshold_scale_series(windows, np.asarray([f[0] for f in found], dtype=np.int64))
    return [
        WindowEdge(time, windows[position].name, "start" if kind == "start" else "end", float(s))
        for (time, _, position, kind), s in zip(found, scales, strict=True)
    ]
