"""Chain liveness (daemon/service/health.py): stale once no new head for stale_after,
counted from the start when none was seen; a new head (any other head) ends it."""

from __future__ import annotations

from daemon.service.health import ChainLiveness

T0 = 1_800_000_000.0


def test_stale_after_no_new_head_and_alive_again_at_the_next() -> None:
    live = ChainLiveness(stale_after=10, started=T0)
    assert live.problem("eth", T0 + 9) is None
    assert live.problem("eth", T0 + 10) == "chain eth: no head yet for 10s (stale_after 10s)"
    live.polled(100, T0 + 11)
    assert not live.stale(T0 + 20)
    live.polled(100, T0 + 20)  # answers, but the head did not move
    assert live.last_poll == T0 + 20
    assert live.stale(T0 + 21)
    assert live.problem("eth", T0 + 95) == "chain eth: no new head for 1m24s (stale_after 10s)"
    live.polled(99, T0 + 96)  # a reorganisation to a shorter branch is a new head too
    assert live.problem("eth", T0 + 96) is None
    assert live.last_new_head == T0 + 96
