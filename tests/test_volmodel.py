"""The implied-vol model: realized-vol EWMA, term structure, skew, spreads, and the fit
on Deribit BTC DVOL holding on the real data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.calibrate_iv import fit, load, score
from rules.hedge.volmodel import (
    CALIBRATED,
    DAY,
    YEAR,
    RealizedVol,
    realized_series,
    update_realized,
)


def test_ewma_of_a_constant_return_is_that_return_annualised() -> None:
    times = np.arange(500, dtype=np.int64) * 3600
    prices = 100.0 * np.exp(0.01 * np.arange(500))  # +1 % a bar
    rv = realized_series(times, prices)
    assert math.isnan(rv[0])
    assert rv[-1] == pytest.approx(0.01 * math.sqrt(YEAR / 3600))


def test_streaming_update_is_the_series_and_ignores_repeats() -> None:
    rng = np.random.default_rng(3)
    times = np.arange(300, dtype=np.int64) * 3600
    prices = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, 300)))
    state: RealizedVol | None = None
    for t, p in zip(times, prices, strict=True):
        state = update_realized(state, int(t), float(p))
    assert state is not None
    assert state.vol == realized_series(times, prices)[-1]
    assert update_realized(state, state.time, 1.0) is state


def test_a_gap_counts_as_the_bars_it_spans() -> None:
    # one 4-hour return of 2 % is the same variance per second as 4 hourly returns of 1 %
    start = RealizedVol(time=0, price=100.0, variance=1e-8, samples=10)
    one = update_realized(start, 4 * 3600, 100.0 * math.exp(0.02))
    four = start
    for k in range(1, 5):
        four = update_realized(four, k * 3600, 100.0 * math.exp(0.01 * k))
    assert one.variance == pytest.approx(four.variance, rel=0.05)


def test_term_structure_mean_reverts_to_the_long_run_level() -> None:
    high, low = 2.0, 0.2  # realized vol far above and far below the usual
    for rv in (high, low):
        short, mid, long = (CALIBRATED.atm(rv, d / 365) for d in (7, 30, 365))
        assert mid == pytest.approx(CALIBRATED.atm30(rv))
        assert abs(short - CALIBRATED.long_run) > abs(mid - CALIBRATED.long_run)
        assert abs(long - CALIBRATED.long_run) < abs(mid - CALIBRATED.long_run)
    assert CALIBRATED.atm30(math.nan) == CALIBRATED.long_run


def test_put_skew_and_spreads_widen_in_the_wings_and_with_vol() -> None:
    years = 30 / 365
    ivs = [CALIBRATED.implied_vol(0.7, 100.0, k, years) for k in (60.0, 80.0, 100.0, 120.0)]
    assert ivs[0] > ivs[1] > ivs[2]
    assert ivs[3] > ivs[2]  # a smaller smile on the call side
    assert ivs[0] - ivs[2] > ivs[3] - ivs[2]
    atm = CALIBRATED.quote("put", 0.7, 100.0, 100.0, years)
    wing = CALIBRATED.quote("put", 0.7, 100.0, 75.0, years)
    calm = CALIBRATED.quote("put", 0.3, 100.0, 100.0, years)
    assert atm.bid < atm.mid < atm.ask
    assert wing.half_spread_vol > atm.half_spread_vol > calm.half_spread_vol
    assert (wing.ask - wing.bid) / wing.mid > (atm.ask - atm.bid) / atm.mid
    assert CALIBRATED.mid("put", 0.7, 100.0, 75.0, years) == wing.mid


def test_cheap_is_iv_against_realized() -> None:
    # in calm (RV 0.4) IV30 = 0.61 + 0.41 * 0.4 ~ 0.77 is ~1.9x RV; in a spike it is below RV
    assert not CALIBRATED.is_cheap(0.4, 1.2)
    assert CALIBRATED.is_cheap(1.5, 1.2)
    assert not CALIBRATED.is_cheap(math.nan, 1.2)


@pytest.mark.shared_data
def test_the_fit_holds_on_the_real_data(shared_data: Path) -> None:
    iv, rv5, _ = load(shared_data)
    assert len(iv) == 277
    coef = np.array([CALIBRATED.intercept, CALIBRATED.slope])
    # the module's constants are the fit's, to their three decimals
    assert fit(iv, rv5) == pytest.approx(coef, abs=6e-4)
    r2, mae = score(coef, iv, rv5)
    # measured: R^2 0.693, median |error| 3.66 vol points; the bounds leave rounding room
    assert r2 > 0.68
    assert mae < 3.8
    # the median IV/RV the docs quote, and the long-run level at the median RV
    assert np.median(iv / rv5) == pytest.approx(1.29, abs=0.005)
    assert CALIBRATED.atm30(float(np.median(rv5))) == pytest.approx(CALIBRATED.long_run, abs=2e-3)
    # out of sample (first half's fit on the second half): 5.64 points measured
    half = len(iv) // 2
    first = fit(iv[:half], rv5[:half])
    assert score(first, iv[half:], rv5[half:])[1] < 6.0


def test_model_vol_uses_no_later_price() -> None:
    # truncating the series after bar k leaves every figure up to k unchanged
    rng = np.random.default_rng(5)
    times = np.arange(400, dtype=np.int64) * 3600
    prices = 10 * np.exp(np.cumsum(rng.normal(0, 0.03, 400)))
    full = realized_series(times, prices, half_life=2 * DAY)
    cut = realized_series(times[:250], prices[:250], half_life=2 * DAY)
    assert np.array_equal(full[:250], cut, equal_nan=True)
