"""Feature engine settings and the names of the features it computes.

What this module guarantees:

- :class:`FeatureParams` checks itself: a config that builds one builds an engine.
- It imports neither numba nor the compiled loops, so loading and checking a config
  (``alvh check-config``) never loads the compiler; :mod:`rules.features.engine` does,
  with its first engine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from rules.features.proxies import bars_in
from rules.types import FEATURE_NAMES

__all__ = ["ENGINE_FEATURES", "FIXED_WINDOWS", "FeatureParams"]

#: Every feature the engine computes: all of FEATURE_NAMES except the calendar's
#: ``threshold_scale``, which the rules engine supplies.
ENGINE_FEATURES: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n != "threshold_scale")

#: Features that look back a fixed time (seconds) whatever the bar interval, through
#: ``bars_in`` (at least one bar): on bars longer than that time they would measure
#: something else than their name says (a "1h" drain over one daily bar), so a layer may
#: not use them there (:meth:`FeatureParams.window`; the config refuses it). ``mev_score``
#: looks back ``mev_window``; ``iv`` and ``tvl_volume_ratio`` are built on ``volume_24h``.
FIXED_WINDOWS: Mapping[str, int] = MappingProxyType(
    {
        "move_sigma_1h": 3600,
        "tvl_drain_1h": 3600,
        "move_sigma_4h": 4 * 3600,
        "move_sigma_24h": 86400,
        "drawdown_24h": 86400,
        "volume_24h": 86400,
        "tvl_volume_ratio": 86400,
        "iv": 86400,
    }
)


def _positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"FeatureParams.{name} must be an int >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class FeatureParams:
    """Feature engine settings. Windows are in bars except ``mev_window`` (seconds)."""

    bar_interval: int  # seconds
    rsi_period: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    bb_period: int = 20
    bb_nbdev: float = 2.0
    sigma_window: int = 48
    realized_vol_window: int = 48
    corr_window: int = 48
    mev_window: int = 3600  # seconds

    def __post_init__(self) -> None:
        _positive_int("bar_interval", self.bar_interval)
        for name in ("rsi_period", "macd_fast", "macd_slow", "bb_period"):
            _positive_int(name, getattr(self, name), 2)
        _positive_int("macd_signal", self.macd_signal)
        if self.macd_fast >= self.macd_slow:
            raise ValueError(
                f"FeatureParams.macd_fast ({self.macd_fast}) must be < macd_slow ({self.macd_slow})"
            )
        nbdev = self.bb_nbdev
        if isinstance(nbdev, bool) or not isinstance(nbdev, int | float):
            raise ValueError(f"FeatureParams.bb_nbdev must be a number, got {nbdev!r}")
        if not (math.isfinite(nbdev) and nbdev >= 0.0):
            raise ValueError(f"FeatureParams.bb_nbdev must be finite and >= 0, got {nbdev!r}")
        for name in ("sigma_window", "realized_vol_window", "corr_window"):
            _positive_int(name, getattr(self, name), 2)
        _positive_int("mev_window", self.mev_window)

    @property
    def bars_1h(self) -> int:
        return bars_in(3600, self.bar_interval)

    @property
    def bars_4h(self) -> int:
        return bars_in(4 * 3600, self.bar_interval)

    @property
    def bars_24h(self) -> int:
        return bars_in(86400, self.bar_interval)

    @property
    def mev_bars(self) -> int:
        return bars_in(self.mev_window, self.bar_interval)

    def window(self, name: str) -> int | None:
        """The time (seconds) feature ``name`` looks back, when it is a fixed time rather
        than a number of bars (None); see :data:`FIXED_WINDOWS`."""
        if name == "mev_score":
            return self.mev_window
        return FIXED_WINDOWS.get(name)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FeatureParams.__slots__}
