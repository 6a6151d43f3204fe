"""The compiled loops (``rules.features.kernels``): their constants are the engines', and
``compile_kernels`` (what scripts/setup.sh runs) compiles every loop the daemon and the
backtest run, so that neither compiles on its first call.

What the loops compute is tested against independent oracles elsewhere: the features in
tests/test_features.py, tests/test_bars.py and tests/test_proxies.py, the indicators in
tests/test_indicators.py (TA-Lib); the layer state machine (``rules.layers.machine``) in
tests/test_engine.py.
"""

from __future__ import annotations

import subprocess
import sys

from rules.features import kernels
from rules.features.engine import ENGINE_FEATURES
from tests.conftest import REPO_ROOT

KERNEL_ROWS = {
    "_PRICE": "price",
    "_RET": "ret",
    "_MOVE_SIGMA": "move_sigma",
    "_MOVE_1H": "move_sigma_1h",
    "_MOVE_4H": "move_sigma_4h",
    "_MOVE_24H": "move_sigma_24h",
    "_DRAWDOWN_24H": "drawdown_24h",
    "_REALIZED_VOL": "realized_vol",
    "_RSI": "rsi",
    "_MACD": "macd",
    "_MACD_SIGNAL": "macd_signal",
    "_MACD_HIST": "macd_hist",
    "_BB_UPPER": "bb_upper",
    "_BB_MIDDLE": "bb_middle",
    "_BB_LOWER": "bb_lower",
    "_BB_POS": "bb_pos",
    "_TVL": "tvl",
    "_TICK_TVL": "tick_tvl",
    "_VOLUME_24H": "volume_24h",
    "_TVL_VOLUME": "tvl_volume_ratio",
    "_IV": "iv",
    "_TVL_DRAIN": "tvl_drain_1h",
    "_MEV_SCORE": "mev_score",
    "_BREADTH": "breadth",
    "_CORR": "corr",
}


def test_kernel_constants_are_the_engines() -> None:
    assert list(kernels.FEATURE_INDEX) == list(ENGINE_FEATURES)
    assert sorted(KERNEL_ROWS.values()) == sorted(ENGINE_FEATURES)
    for constant, feature in KERNEL_ROWS.items():
        assert getattr(kernels, constant) == ENGINE_FEATURES.index(feature), constant


#: Run in a fresh interpreter (a test process may have compiled everything already):
#: compile_kernels, then what the daemon and the backtest run; prints the entry points
#: that compiled anything new (none expected) and how many signatures feature_steps has.
WORKLOAD = """
import numpy as np
from numba.core.registry import CPUDispatcher
from rules.features import kernels
from rules.layers import machine
from rules.pipeline import Pipeline, compile_kernels
from tests.test_backtest import BAR, pool_infos, small_spec

def signatures():
    return {f"{m.__name__}.{n}": len(v.signatures) for m in (kernels, machine)
            for n, v in vars(m).items() if isinstance(v, CPUDispatcher)}

compile_kernels()
compiled = signatures()
# The daemon's step (one block of a subset of the pools), a backtest's table, a
# catch-up's table with layer statuses and partial presence.
pipeline = Pipeline(small_spec(()), pool_infos(3))
rows = np.array([0, 2], dtype=np.int64)
ones = np.ones(2)
ints = np.ones(2, dtype=np.int64)
pipeline.step(1_700_000_000, rows, ones, ones, ones, ones, ints, ints, chain="chain")
times = 1_700_000_000 + BAR * np.arange(1, 6, dtype=np.int64)
table = np.ones((5, 3))
counts = np.ones((5, 3), dtype=np.int64)
present = np.ones((5, 3), dtype=np.bool_)
present[2, 1] = False
for statuses, mask in ((False, None), (True, present), (False, present)):
    pipeline.step_many(
        times, table, table, table, table, counts, counts, present=mask, statuses=statuses
    )
    times = times + 5 * BAR
after = signatures()
feature_steps = compiled["rules.features.kernels.feature_steps"]
print(sorted(n for n in after if after[n] != compiled[n]), feature_steps)
"""


def test_compile_kernels_compiles_what_the_daemon_and_the_backtest_run() -> None:
    out = subprocess.run(
        [sys.executable, "-c", WORKLOAD], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert out.stdout.split() == ["[]", "1"], out.stdout + out.stderr
