"""Whether each chain is alive: when it last answered and when its head last moved.

Guarantees: a chain whose node stops producing heads (paused, stuck, every request
failing) is reported once no new head has been seen for its ``[[chains]] stale_after``,
counted from the start of the run when none was ever seen, and stops being reported at
the first new head. Times are wall time (unix seconds, taken as arguments): liveness is
about now, unlike the rules, which run on block time.
"""

from __future__ import annotations

from dataclasses import dataclass

from rules.durations import format_duration


@dataclass(slots=True)
class ChainLiveness:
    """One chain's last successful poll and last new head, in wall time."""

    stale_after: int
    started: float
    head: int = -1
    last_poll: float | None = None
    last_new_head: float | None = None

    def polled(self, head: int, now: float) -> None:
        """A poll answered with ``head``; a head other than the last one is a new head
        (a reorganisation to a shorter branch moves the head too)."""
        self.last_poll = now
        if head != self.head:
            self.head = head
            self.last_new_head = now

    def silent_for(self, now: float) -> float:
        """Seconds since the last new head (since the start when none was seen)."""
        since = self.last_new_head if self.last_new_head is not None else self.started
        return max(0.0, now - since)

    def stale(self, now: float) -> bool:
        return self.silent_for(now) >= self.stale_after

    def problem(self, chain: str, now: float) -> str | None:
        """The line ``/healthz`` reports for a stale chain, None when it is alive."""
        if not self.stale(now):
            return None
        silent = format_duration(int(self.silent_for(now)))
        seen = "no new head" if self.last_new_head is not None else "no head yet"
        return (
            f"chain {chain}: {seen} for {silent} (stale_after {format_duration(self.stale_after)})"
        )
