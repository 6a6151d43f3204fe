"""Calibrate :mod:`rules.hedge.volmodel` on Deribit BTC DVOL against BTC realized vol.

Run: ``.venv/bin/python bench/calibrate_iv.py [--data ../shared/data]``

DVOL is Deribit's 30-day implied-vol index (percent, daily). The regressor is the EWMA
realized vol of hourly BTC/USDT closes (``rules.hedge.volmodel.realized_series``, the
function the backtest and the daemon use) read at the last hourly bar of each day, so a
day's IV is explained by prices up to that day only. Prints, for the 5-day EWMA alone
and with a slow (180-day) EWMA added as a long-run level: the least-squares fit, R^2,
the median absolute error in vol points, the median IV/RV, and the same scored out of
sample (fit on the first half of the days, scored on the second half). The constants in
``rules/hedge/volmodel.py`` (``CALIBRATED``) and ``docs/hedging.md`` quote this printout.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from rules.hedge.volmodel import DAY, realized_series

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SPOT = "cex_ohlcv/binance_spot_BTC_USDT-1h_2018-2021.csv"
DVOL = "implied_vol/deribit_dvol_btc_daily_2021.csv"


def _unix(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp())


def load(data: Path) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(DVOL as a fraction, RV 5-day EWMA, RV 180-day EWMA) on the DVOL days."""
    times, closes = [], []
    with (data / SPOT).open() as f:
        for row in csv.DictReader(f):
            # a bar is stamped with its open: its close is known an hour later
            times.append(int(dt.datetime.fromisoformat(row["date"]).timestamp()) + 3600)
            closes.append(float(row["close"]))
    t = np.asarray(times, dtype=np.int64)
    p = np.asarray(closes)
    rv5 = realized_series(t, p, half_life=5 * DAY)
    rv180 = realized_series(t, p, half_life=180 * DAY)
    iv, x5, x180 = [], [], []
    with (data / DVOL).open() as f:
        for row in csv.DictReader(f):
            day_end = _unix(row["date"]) + DAY
            i = int(np.searchsorted(t, day_end, side="right")) - 1
            iv.append(float(row["dvol"]) / 100)
            x5.append(rv5[i])
            x180.append(rv180[i])
    return np.asarray(iv), np.asarray(x5), np.asarray(x180)


def fit(y: NDArray[np.float64], *columns: NDArray[np.float64]) -> NDArray[np.float64]:
    design = np.column_stack([np.ones_like(y), *columns])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return np.asarray(coef)


def score(
    coef: NDArray[np.float64], y: NDArray[np.float64], *columns: NDArray[np.float64]
) -> tuple[float, float]:
    design = np.column_stack([np.ones_like(y), *columns])
    err = y - design @ coef
    r2 = 1 - float(np.sum(err**2) / np.sum((y - y.mean()) ** 2))
    return r2, float(np.median(np.abs(err))) * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    iv, rv5, rv180 = load(args.data)
    n = len(iv)
    half = n // 2
    print(f"days: {n} (first half {half}, second half {n - half})")
    print(f"DVOL median {np.median(iv):.3f}; RV5 median {np.median(rv5):.3f}")
    print(f"median IV/RV5 {np.median(iv / rv5):.3f}; median IV/RV180 {np.median(iv / rv180):.3f}")
    variants = {"IV = a + b RV5": (rv5,), "IV = a + b RV5 + c RV180": (rv5, rv180)}
    for name, columns in variants.items():
        coef = fit(iv, *columns)
        r2, mae = score(coef, iv, *columns)
        first = fit(iv[:half], *(c[:half] for c in columns))
        r2_oos, mae_oos = score(first, iv[half:], *(c[half:] for c in columns))
        naive = float(np.median(np.abs(iv[half:] - np.median(iv[:half])))) * 100
        print(f"{name}: coef {np.round(coef, 3).tolist()}")
        print(f"  in sample: R^2 {r2:.3f}, median |error| {mae:.2f} vol points")
        print(
            f"  out of sample: coef(first half) {np.round(first, 3).tolist()}, "
            f"R^2 {r2_oos:.3f}, median |error| {mae_oos:.2f} vol points "
            f"(a constant at the first half's median: {naive:.2f})"
        )
    coef = fit(iv, rv5)
    for label, part in (("first", slice(0, half)), ("second", slice(half, n))):
        r2, mae = score(coef, iv[part], rv5[part])
        spread = float(np.std(iv[part])) * 100
        print(
            f"all-days fit on the {label} half: R^2 {r2:.3f}, median |error| {mae:.2f} "
            f"vol points (DVOL std there {spread:.1f})"
        )
    print(f"long-run level (fit at the median RV5): {coef[0] + coef[1] * np.median(rv5):.3f}")


if __name__ == "__main__":
    main()
