"""Durations as used in the config (``"12s"``, ``"5m"``, ``"1h30m"``, ``"7d"``) and ISO times.

Guarantees: :func:`parse_duration` returns whole seconds or raises ``ValueError``
with a sentence naming what is wrong; :func:`format_duration` is its inverse on
canonical forms. :func:`iso_utc` formats unix seconds as ``YYYY-MM-DDTHH:MM:SSZ``.
Pure: no clock reads.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str | int) -> int:
    """``"1h30m"`` -> 5400. A bare integer (or integer string) is seconds."""
    if isinstance(text, bool):
        raise ValueError("a duration must be a string like '5m' or a number of seconds")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a duration must not be negative, got {text}")
        return text
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration")
    if s.isdigit():
        return int(s)
    pos = 0
    total = 0
    seen: set[str] = set()
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        unit = m.group(2)
        if unit in seen:
            raise ValueError(f"duration {text!r} repeats the unit {unit!r}")
        seen.add(unit)
        total += int(m.group(1)) * _UNIT_SECONDS[unit]
        pos = m.end()
    if pos != len(s) or not seen:
        raise ValueError(f"invalid duration {text!r}: use e.g. '30s', '5m', '1h30m', '7d'")
    return total


def format_duration(seconds: int) -> str:
    """Canonical short form: 5400 -> ``"1h30m"``, 0 -> ``"0s"``."""
    if seconds == 0:
        return "0s"
    out = []
    rest = seconds
    for unit in ("d", "h", "m", "s"):
        n, rest = divmod(rest, _UNIT_SECONDS[unit])
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def iso_utc(seconds: int) -> str:
    """Unix seconds -> ``"2026-05-07T14:30:00Z"``.

    Cached: alerts, hedges and backtest reports format the same bar and expiry times
    over and over, and strftime costs ~3 us a call. The times repeat close together (the
    pools of one step, a firing's since), so a small cache catches them; a long-running
    daemon formats a new time at every block, and each entry costs ~240 bytes (65,536
    of them were 15 MiB of a ~100 MiB daemon)."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_utc(text: str) -> int:
    """ISO 8601 date or date-time -> unix seconds; naive times are taken as UTC."""
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError as exc:
        raise ValueError(f"invalid ISO 8601 time {text!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())
