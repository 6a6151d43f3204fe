"""Replay adapter: every supported format from the real files in ``../shared/data``,
format detection, one-line errors with line numbers, skipping, cuts, duplicates."""

from __future__ import annotations

import csv
import json
import math
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.errors import AdapterError
from adapters.replay import (
    FORMATS,
    ReplayError,
    ReplaySeries,
    detect_format,
    load,
    parse_time,
)
from rules.uniswap import amounts_for_liquidity, sqrt_ratio_at_tick

ETH_HOURLY = "cex_ohlcv/binance_spot_ETH_USDT-1h_2018-2021.csv"
CRASH_DAYS = "cex_ohlcv/eth_usd_10min_crash_days"
DAILY = "uniswap_v3_pool_daily"
WETH_USDT_005 = f"{DAILY}/weth_usdt_0.05__0x11b815efb8f581194ae79006d24e0d814b7697f6.json"
WBTC_WETH_005 = f"{DAILY}/wbtc_weth_0.05__0x4585fe77225b41b697c938b018e2ac67ac5a20c0.json"
MINUTE = "uniswap_v3_pool_minute_polygon_usdc_weth_005"
MINUTE_POOL = "0x45dda9cb7c25131df268515131f647d726f50608"
MINUTE_DAY = f"{MINUTE}/Polygon-{MINUTE_POOL}-2022-08-19.csv"
STABLE_HOURLY = "uniswap_v3_stable_pool_hourly/usdc_usdt_0.01_hourly_pool_state_2022.csv"
USDE_BLOCKS = "uniswap_v3_stable_pool_hourly/usde_usdt_blocklevel_2025-10-10_depeg.parquet"
MAINNET_MINUTE = (
    "uniswap_v3_pool_events_2024-01-05/"
    "ethereum-0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640-2024-01-05.minute.csv"
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp())


def one(series: list[ReplaySeries]) -> ReplaySeries:
    assert len(series) == 1, [s.pool for s in series]
    return series[0]


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(paths: list[str], **options: object) -> str:
    with pytest.raises(ReplayError) as caught:
        load(paths, **options)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- real data ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eth(shared_data: Path) -> ReplaySeries:
    return one(load([str(shared_data / ETH_HOURLY)]))


@pytest.mark.shared_data
def test_binance_hourly_loads_with_known_facts(shared_data: Path, eth: ReplaySeries) -> None:
    assert len(eth) == 34_943  # PROVENANCE.md
    assert eth.pool == "binance_spot_ETH_USDT-1h_2018-2021"
    assert math.isnan(eth.fee)
    assert eth.skipped_rows == eth.duplicate_rows == 0
    # Bars are stamped at their close: the 2018-01-01 00:00 bar is known at 01:00.
    assert eth.time[0] == utc(2018, 1, 1, 1)
    assert eth.time[-1] == utc(2022, 1, 1)
    assert eth.price[0] == 727.62
    # Base volume converted to quote at the close.
    assert eth.volume[0] == pytest.approx(2105.901 * 727.62, rel=1e-12)
    assert np.isnan(eth.tvl).all()
    assert np.isnan(eth.tick_tvl).all()
    # The missing hours are gaps inside 2018-2021 (35,064 hours): 121 of them
    # (PROVENANCE.md says 122), the longest 33 hours from 2018-02-08 (Binance maintenance).
    steps = np.diff(eth.time)
    missing = steps // 3600 - 1
    assert int(missing.sum()) == (utc(2022, 1, 1) - utc(2018, 1, 1)) // 3600 - len(eth) == 121
    longest = int(np.argmax(missing))
    assert (missing[longest], eth.time[longest]) == (33, utc(2018, 2, 8, 1))
    # Black Thursday: the lowest hourly close of 2020-03-12..14 is on the 13th, 86-110 USDT.
    window = (eth.time >= utc(2020, 3, 12)) & (eth.time < utc(2020, 3, 15))
    low = np.flatnonzero(window)[np.argmin(eth.price[window])]
    assert 86.0 <= eth.price[low] <= 110.0
    assert utc(2020, 3, 13) <= eth.time[low] < utc(2020, 3, 14)


@pytest.mark.shared_data
def test_klines_feather_reads_like_the_csv(
    shared_data: Path, eth: ReplaySeries, tmp_path: Path
) -> None:
    frame = pd.read_csv(shared_data / ETH_HOURLY)
    frame["date"] = pd.to_datetime(frame["date"], utc=True)
    feather = tmp_path / "ETH_USDT-1h.feather"
    frame.to_feather(feather)
    assert detect_format(feather) == "klines"
    again = one(load([str(feather)]))
    assert again.pool == "ETH_USDT-1h"
    np.testing.assert_array_equal(again.time, eth.time)
    np.testing.assert_array_equal(again.price, eth.price)
    np.testing.assert_array_equal(again.volume, eth.volume)


@pytest.mark.shared_data
def test_coinapi_ten_minute_bars_keep_the_last_of_repeated_bars(shared_data: Path) -> None:
    folder = shared_data / CRASH_DAYS
    series = {s.pool: s for s in load([str(folder)])}
    assert sorted(series) == [
        "eth_usd_10min_2020-09-05",
        "eth_usd_10min_2021-01-11",
        "eth_usd_10min_2021-01-21",
        "eth_usd_10min_2021-02-22",
        "eth_usd_10min_2021-06-21",
    ]
    repeated = series["eth_usd_10min_2020-09-05"]
    # The first bar appears 3 times in the file: 2 rows dropped and counted.
    assert (len(repeated), repeated.duplicate_rows) == (142, 2)
    for name, s in series.items():
        if s is not repeated:
            assert (len(s), s.duplicate_rows) == (144, 0), name
        assert np.all(np.diff(s.time) == 600), name
    bars = json.loads((folder / "eth_usd_10min_2020-09-05.json").read_text())
    first = bars[0]
    assert repeated.time[0] == utc(2020, 9, 5, 0, 30)  # time_period_end of the first bar
    assert repeated.price[0] == first["price_close"]
    assert repeated.volume[0] == pytest.approx(first["volume_traded"] * first["price_close"])


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("name", "fee", "rows"),
    [
        ("uni_weth_0.30__0x1d42064fc4beb5f8aaf85f4617ae8b3b5b8bd801", 0.003, 1674),
        # The WBTC pool's creation day has every field 0: no price yet, dropped.
        ("wbtc_weth_0.05__0x4585fe77225b41b697c938b018e2ac67ac5a20c0", 0.0005, 1673),
        ("weth_usdt_0.05__0x11b815efb8f581194ae79006d24e0d814b7697f6", 0.0005, 1674),
        ("weth_usdt_0.30__0x4e68ccd3e89f51c3074ca5072bbac773960dfa36", 0.003, 1674),
    ],
)
def test_subgraph_daily_loads_ascending(
    shared_data: Path, name: str, fee: float, rows: int
) -> None:
    path = str(shared_data / DAILY / f"{name}.json")
    assert detect_format(path) == "subgraph"
    s = one(load([path], price_field="token1Price"))
    assert s.pool == name.split("__")[1]
    assert s.fee == fee
    assert len(s) == rows
    assert np.all(np.diff(s.time) == 86400)  # ascending, no gaps, whichever order the file has
    assert s.time[-1] == utc(2025, 12, 4)  # 2025-12-03 is stamped at its end
    assert (s.skipped_rows, s.duplicate_rows) == (0, 0)
    inverse = one(load([path], price_field="token0Price"))
    np.testing.assert_allclose(s.price * inverse.price, 1.0, rtol=1e-9)


@pytest.mark.shared_data
def test_subgraph_facts_and_units(shared_data: Path) -> None:
    s = one(load([str(shared_data / WETH_USDT_005)], price_field="token1Price"))
    # token1Price of WETH/USDT is USDT per WETH.
    assert s.price.min() > 900
    assert s.price.max() < 5000
    # PROVENANCE.md: the pool traded 23x its TVL on 2023-03-11 (stamped at the day's end).
    day_end = int(np.searchsorted(s.time, utc(2023, 3, 12)))
    assert s.time[day_end] == utc(2023, 3, 12)
    assert 20 < s.volume[day_end] / s.tvl[day_end] < 26
    assert np.isnan(s.tick_tvl).all()


@pytest.mark.shared_data
def test_subgraph_needs_the_price_field(shared_data: Path) -> None:
    message = error_of([str(shared_data / WETH_USDT_005)])
    assert "--price token0Price|token1Price" in message
    assert "token0Price is token0 per token1" in message
    assert "price field 'close'" in error_of(
        [str(shared_data / WETH_USDT_005)], price_field="close"
    )


@pytest.fixture(scope="module")
def minute(shared_data: Path) -> ReplaySeries:
    return one(load([str(shared_data / MINUTE)]))


def _raw_minute_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.shared_data
def test_minute_folder_is_one_series(shared_data: Path, minute: ReplaySeries) -> None:
    assert minute.pool == MINUTE_POOL
    assert len(minute) == 35 * 1440 - 10  # 10 minutes missing in all (PROVENANCE.md)
    assert len(minute.sources) == 35
    assert minute.fee == 0.0005
    assert minute.time[0] == utc(2022, 7, 19, 0, 1)  # the 00:00 minute closes at 00:01
    assert np.isnan(minute.tvl).all()
    globbed = one(load([str(shared_data / MINUTE / "*.csv")]))
    np.testing.assert_array_equal(globbed.time, minute.time)
    listed = one(load([str(p) for p in sorted((shared_data / MINUTE).glob("*.csv"))]))
    np.testing.assert_array_equal(listed.price, minute.price)


@pytest.mark.shared_data
def test_minute_prices_volume_and_tick_tvl(shared_data: Path) -> None:
    path = shared_data / MINUTE_DAY
    day = one(load([str(path)]))
    raw = _raw_minute_rows(path)
    assert len(day) == len(raw) == 1440
    ticks = np.array([int(r["closeTick"]) for r in raw])
    np.testing.assert_allclose(day.price, 1e12 / 1.0001**ticks, rtol=1e-11)
    # 2022-08-19: ETH fell about 12% over the day.
    assert -0.14 < day.price[-1] / day.price[0] - 1 < -0.11
    for i in (0, 1, 700, 1439):
        row = raw[i]
        expected_volume = int(row["inAmount0"]) / 1e6 + int(row["inAmount1"]) / 1e18 * day.price[i]
        assert day.volume[i] == pytest.approx(expected_volume, rel=1e-12)
        # Tick TVL against the contracts' integer amounts for the 10-tick range.
        tick, liquidity = int(row["closeTick"]), int(row["currentLiquidity"])
        lower = tick // 10 * 10
        amount0, amount1 = amounts_for_liquidity(
            liquidity,
            sqrt_ratio_at_tick(tick),
            sqrt_ratio_at_tick(lower),
            sqrt_ratio_at_tick(lower + 10),
        )
        expected_depth = amount0 / 1e6 + amount1 / 1e18 * day.price[i]
        assert day.tick_tvl[i] == pytest.approx(expected_depth, rel=1e-9)


@pytest.mark.shared_data
def test_minute_layout_options(shared_data: Path) -> None:
    path = str(shared_data / MINUTE_DAY)
    default = one(load([path]))
    flipped = one(load([path], quote="token1"))
    np.testing.assert_allclose(default.price * flipped.price, 1.0, rtol=1e-12)
    # Same tick range value, counted in WETH instead of USDC.
    np.testing.assert_allclose(flipped.tick_tvl * default.price, default.tick_tvl, rtol=1e-9)
    wider = one(load([path], tick_spacing=60))
    assert wider.fee == 0.003  # the tier of that spacing
    assert np.all(wider.tick_tvl >= default.tick_tvl * 0.99)
    assert one(load([path], fee=0.0001)).fee == 0.0001
    # Mainnet USDC/WETH 0.05% has the same layout as the default.
    mainnet = one(load([str(shared_data / MAINNET_MINUTE)]))
    assert mainnet.pool == "0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640"
    assert mainnet.price.min() > 2100
    assert mainnet.price.max() < 2400


@pytest.mark.shared_data
def test_stable_pool_hourly_state(shared_data: Path) -> None:
    path = shared_data / STABLE_HOURLY
    s = one(load([str(path)]))
    assert len(s) == 8760
    assert s.pool == "usdc_usdt_0.01_hourly_pool_state_2022"
    assert s.fee == 0.0001
    assert s.time[0] == utc(2022, 1, 1)
    assert np.all(np.diff(s.time) == 3600)
    with path.open(newline="") as fh:
        raw = list(csv.DictReader(fh))
    ticks = np.array([int(r["poolTick"]) for r in raw])
    np.testing.assert_allclose(s.price, 1.0001**ticks, rtol=1e-12)  # USDT per USDC
    # The USDT wobbles: USDC bought more than 1.01 USDT on 2022-05-12 and 2022-11-10.
    for day in (utc(2022, 5, 12), utc(2022, 11, 10)):
        that_day = (s.time >= day) & (s.time < day + 86400)
        assert s.price[that_day].max() > 1.01
    assert np.median(s.price) == pytest.approx(1.0, abs=0.002)
    assert np.isnan(s.tvl).all()
    assert (s.volume == 0).all()
    row = raw[0]
    tick, liquidity = int(row["poolTick"]), int(row["poolLiquidity"])
    amount0, amount1 = amounts_for_liquidity(
        liquidity, sqrt_ratio_at_tick(tick), sqrt_ratio_at_tick(tick), sqrt_ratio_at_tick(tick + 1)
    )
    assert s.tick_tvl[0] == pytest.approx(amount1 / 1e6 + amount0 / 1e6 * s.price[0], rel=1e-9)
    inverted = one(load([str(path)], quote="token0"))
    np.testing.assert_allclose(inverted.price * s.price, 1.0, rtol=1e-12)


@pytest.mark.shared_data
def test_usde_parquet_snapshots(shared_data: Path) -> None:
    path = str(shared_data / USDE_BLOCKS)
    assert detect_format(path) == "subgraph"
    s = one(load([path], price_field="token1Price"))
    assert len(s) == 2980
    assert s.price.min() > 0.99
    assert s.price.max() < 1.01
    assert utc(2025, 10, 10) <= s.time[0]
    assert s.time[-1] < utc(2025, 10, 12)
    assert (s.tvl > 0).all()


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("relative", "fmt"),
    [
        (ETH_HOURLY, "klines"),
        (f"{CRASH_DAYS}/eth_usd_10min_2021-01-11.json", "klines"),
        (WETH_USDT_005, "subgraph"),
        (MINUTE_DAY, "minute"),
        (MAINNET_MINUTE, "minute"),
        (STABLE_HOURLY, "hourly"),
        (USDE_BLOCKS, "subgraph"),
    ],
)
def test_detect_format_of_real_files(shared_data: Path, relative: str, fmt: str) -> None:
    assert detect_format(shared_data / relative) == fmt


@pytest.mark.shared_data
def test_cut_on_real_data(shared_data: Path, eth: ReplaySeries) -> None:
    start, end = utc(2020, 3, 1), utc(2020, 4, 1)
    march = one(load([str(shared_data / ETH_HOURLY)], start=start, end=end))
    assert march.time[0] == start
    assert march.time[-1] == end - 3600
    assert len(march) == np.count_nonzero((eth.time >= start) & (eth.time < end))
    message = error_of([str(shared_data / ETH_HOURLY)], start=utc(2023, 1, 1))
    assert "has no rows in [2023-01-01T00:00:00Z, +inf)" in message
    assert "its data covers 2018-01-01T01:00:00Z to 2022-01-01T00:00:00Z" in message


# -- detection and options --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ("time,price\n1600000000,1\n", "csv"),
        ("Time , Price ,TVL\n1600000000,1,2\n", "csv"),
        ("date,open,high,low,close,volume\n2020-01-01,1,1,1,1,1\n", "klines"),
        ("timestamp,closeTick,inAmount0,inAmount1,currentLiquidity\n", "minute"),
        ("hour,timestamp,poolTick,poolLiquidity,tickSpacing,dec0,dec1\n", "hourly"),
        ('[{"time_period_start": "2020-01-01T00:00:00Z", "price_close": 1}]', "klines"),
        ('{"data": {"poolDayDatas": [{"date": 1, "token0Price": "1"}]}}', "subgraph"),
    ],
)
def test_detect_format_table(tmp_path: Path, text: str, fmt: str) -> None:
    suffix = ".json" if text.startswith(("[", "{")) else ".csv"
    # The content decides, not the name.
    assert detect_format(write(tmp_path / f"data{suffix}.txt", text)) == fmt


def test_unknown_format_lists_the_supported_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "data.csv", "foo,bar\n1,2\n")
    with pytest.raises(ReplayError) as caught:
        detect_format(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: unknown data format (columns: foo, bar); supported:")
    for name in FORMATS:
        assert f"{name} (" in message
    assert error_of([path]) == message


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"fmt": "excel"}, "unknown format 'excel'; supported: auto, csv, klines, subgraph"),
        ({"start": 10, "end": 10}, "the period is empty"),
        ({"fee": 0.3}, "fee 0.3 must be a fraction in [0, 0.1)"),
        ({"fee": -0.001}, "must be a fraction"),
        ({"quote": "token2"}, "quote 'token2' must be token0 or token1"),
        ({"tick_spacing": 0}, "tick spacing 0 must be in [1, 16384]"),
    ],
)
def test_bad_options(tmp_path: Path, options: dict[str, object], expected: str) -> None:
    path = write(tmp_path / "data.csv", "time,price\n1,1\n")
    assert expected in error_of([path], **options)


def test_bad_paths(tmp_path: Path) -> None:
    assert error_of([str(tmp_path / "nope.csv")]).endswith("nope.csv: no such file or folder")
    assert error_of([str(tmp_path / "*.csv")]).endswith("*.csv: no file matches this pattern")
    (tmp_path / "empty").mkdir()
    assert "no data files" in error_of([str(tmp_path / "empty")])
    assert error_of([]) == "no data files given"
    assert error_of([write(tmp_path / "zero.csv", "")]).endswith("zero.csv: the file is empty")


def test_forced_format_names_missing_columns(tmp_path: Path) -> None:
    typo = write(tmp_path / "typo.csv", "time,prize\n1,2\n")
    assert error_of([typo], fmt="csv") == (
        f"{typo}:1: missing column 'price' for the csv format (the file has: time, prize)"
    )
    path = write(tmp_path / "data.csv", "time,price\n1,1\n")
    assert error_of([path], fmt="minute") == (
        f"{path}:1: missing columns 'timestamp', 'closeTick' for the minute format "
        "(the file has: time, price)"
    )


# -- canonical CSV ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("1600000000", 1600000000),
        ("1600000000.9", 1600000000),  # floored
        ("1600000000000", 1600000000),  # milliseconds
        ("2020-09-13T12:26:40Z", 1600000000),
        ("2020-09-13 12:26:40", 1600000000),  # naive = UTC
        ("2020-09-13T14:26:40+02:00", 1600000000),
        ("2020-09-13", 1599955200),
    ],
)
def test_time_forms(tmp_path: Path, cell: str, expected: int) -> None:
    path = write(tmp_path / "data.csv", f"time,price\n{cell},2.5\n")
    assert one(load([path])).time.tolist() == [expected]


def test_canonical_columns_and_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path / "pool.csv",
        "time,price,tvl,volume,tick_tvl,fee\n"
        "2020-01-01T00:00:00Z,100,5000,10,300,0.003\n"
        "2020-01-01T00:05:00Z,101,,,,\n",
    )
    s = one(load([path]))
    assert s.pool == "pool"
    assert s.source == path
    assert s.fee == 0.003
    assert s.price.tolist() == [100.0, 101.0]
    assert s.tvl[0] == 5000
    assert math.isnan(s.tvl[1])
    assert s.volume.tolist() == [10.0, 0.0]
    assert s.tick_tvl[0] == 300
    assert math.isnan(s.tick_tvl[1])
    assert not s.price.flags.writeable


def test_several_pools_in_one_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "pools.csv",
        "time,price,pool,fee\n2,20,B,0.003\n1,1,A,0.0005\n1,10,B,\n3,3,A,0.0005\n",
    )
    b, a = load([path])  # order of first appearance
    assert (b.pool, b.time.tolist(), b.price.tolist(), b.fee) == ("B", [1, 2], [10.0, 20.0], 0.003)
    assert (a.pool, a.time.tolist(), a.price.tolist(), a.fee) == ("A", [1, 3], [1.0, 3.0], 0.0005)
    assert all(s.fee == 0.0001 for s in load([path], fee=0.0001))  # the option wins


def test_same_pool_across_files_merges_and_later_rows_win(tmp_path: Path) -> None:
    first = write(tmp_path / "a.csv", "time,price,pool\n1,1,P\n2,2,P\n3,3,P\n")
    second = write(tmp_path / "b.csv", "time,price,pool\n3,30,P\n4,40,P\n")
    s = one(load([first, second]))
    assert (s.time.tolist(), s.price.tolist()) == ([1, 2, 3, 4], [1.0, 2.0, 30.0, 40.0])
    assert s.duplicate_rows == 1
    assert s.sources == (first, second)
    assert one(load([second, first])).price[2] == 3.0  # reading order decides
    # The same file given twice is read once.
    assert one(load([first, first, str(tmp_path / "a.csv")])).duplicate_rows == 0


def test_files_disagreeing_on_fee(tmp_path: Path) -> None:
    first = write(tmp_path / "a.csv", "time,price,pool,fee\n1,1,P,0.003\n")
    second = write(tmp_path / "b.csv", "time,price,pool,fee\n2,1,P,0.0005\n")
    assert "files disagree on the fee (0.003 in" in error_of([first, second])
    assert one(load([first, second], fee=0.01)).fee == 0.01


def test_duplicates_keep_last_and_are_counted(tmp_path: Path) -> None:
    path = write(tmp_path / "data.csv", "time,price\n5,50\n1,10\n2,20\n2,21\n2,22\n1,11\n3,30\n")
    s = one(load([path]))
    assert s.time.tolist() == [1, 2, 3, 5]
    assert s.price.tolist() == [11.0, 22.0, 30.0, 50.0]
    assert s.duplicate_rows == 3
    # Only duplicates inside the cut are counted.
    assert one(load([path], start=3)).duplicate_rows == 0
    assert one(load([path], end=2)).duplicate_rows == 1


def test_cut_is_start_inclusive_end_exclusive(tmp_path: Path) -> None:
    path = write(tmp_path / "data.csv", "time,price\n" + "".join(f"{t},1\n" for t in range(10)))
    assert one(load([path], start=3, end=7)).time.tolist() == [3, 4, 5, 6]
    assert one(load([path], start=9)).time.tolist() == [9]
    assert one(load([path], end=1)).time.tolist() == [0]
    assert "has no rows in [1970-01-01T00:00:10Z, +inf)" in error_of([path], start=10)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 40), st.floats(0.01, 1e6, allow_nan=False)),
        min_size=1,
        max_size=60,
    )
)
def test_loaded_series_is_the_last_write_per_time(rows: list[tuple[int, float]]) -> None:
    expected: dict[int, float] = {}
    for t, p in rows:
        expected[t] = p
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.csv"
        path.write_text("time,price\n" + "".join(f"{t},{p!r}\n" for t, p in rows))
        s = one(load([str(path)]))
    assert s.time.tolist() == sorted(expected)
    assert s.price.tolist() == [expected[t] for t in sorted(expected)]
    assert s.duplicate_rows == len(rows) - len(expected)
    assert np.all(np.diff(s.time) > 0)


# -- malformed rows -----------------------------------------------------------------------------

MALFORMED = [
    ("time,price\n1,2\n2,abc\n", "data.csv:3: price 'abc' is not a number"),
    ("time,price\n1,2\n2,0\n", "data.csv:3: price 0 must be > 0"),
    ("time,price\n1,-1.5\n", "data.csv:2: price -1.5 must be > 0"),
    ("time,price\n1,2\n2,\n", "data.csv:3: price is missing"),
    ("time,price\n1,inf\n", "data.csv:2: price inf is not finite"),
    (
        "time,price\nyesterday,2\n",
        "data.csv:2: time 'yesterday' is not an ISO 8601 date or a unix time",
    ),
    ("time,price\n1,2\n,3\n", "data.csv:3: time is missing"),
    ("time,price\n-5,2\n", "data.csv:2: time -5 is out of range"),
    ("time,price\n1,2\n2,3,4\n3,4\n", "data.csv:3: 3 fields, but the header has 2"),
    ("time,price,volume\n1,2\n", "data.csv:2: 2 fields, but the header has 3"),
    ("time,price,volume\n1,2,-3\n", "data.csv:2: volume -3 must be >= 0"),
    ("time,price,tvl\n1,2,x\n", "data.csv:2: tvl 'x' is not a number"),
    ("time,price,fee\n1,2,0.3\n", "data.csv:2: fee 0.3 looks like a percentage"),
    ("time,price,fee\n1,2,0.003\n2,2,0.0005\n", "data.csv:3: fee 0.0005 differs from 0.003"),
    ("time,price,pool\n1,2,A\n2,2,\n", "data.csv:3: pool is empty"),
    # Blank lines and quoted multi-line cells count as an editor counts lines.
    ("time,price\n\n1,2\n\n   \n2,bad\n", "data.csv:6: price 'bad' is not a number"),
    ('time,price,pool\n1,2,"multi\nline"\n2,x,A\n', "data.csv:4: price 'x' is not a number"),
    # The earliest bad row is reported, whatever column is wrong on later rows ...
    ("time,price,volume\n1,2,-1\n2,x,1\n", "data.csv:2: volume -1 must be >= 0"),
    # ... and on one row, the time is checked before the price.
    ("time,price\nnever,x\n", "data.csv:2: time 'never' is not an ISO 8601 date"),
    # Formats other than the canonical CSV.
    (
        "date,open,high,low,close,volume\n"
        "2020-01-01 00:00:00,1,1,1,1,1\n2020-01-01 01:00:00,1,1,1,abc,1\n",
        "data.csv:3: close 'abc' is not a number",
    ),
    (
        "timestamp,closeTick,inAmount0,inAmount1,currentLiquidity\n2022-01-01 00:00:00,1.5,0,0,1\n",
        "data.csv:2: closeTick 1.5 is not an integer",
    ),
    (
        "timestamp,closeTick,inAmount0,inAmount1,currentLiquidity\n"
        "2022-01-01 00:00:00,900000,0,0,1\n",
        "data.csv:2: closeTick 900000 is outside [-887272, 887272]",
    ),
    (
        "hour,timestamp,block,poolTick,poolLiquidity,tickSpacing,token0,token1,dec0,dec1\n"
        "x,1640995200,1,-1,-4,1,USDC,USDT,6,6\n",
        "data.csv:2: poolLiquidity -4 must be >= 0",
    ),
]


@pytest.mark.parametrize(("text", "expected"), MALFORMED)
def test_malformed_csv_gives_one_line_with_the_line_number(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path / "data.csv", text)
    message = error_of([path])
    assert message.startswith(str(tmp_path / expected.split(":", 1)[0]))
    assert message.removeprefix(str(tmp_path) + "/").startswith(expected)


def test_error_is_an_adapter_error_with_its_place(tmp_path: Path) -> None:
    path = write(tmp_path / "data.csv", "time,price\n1,2\n2,abc\n")
    with pytest.raises(AdapterError) as caught:
        load([path])
    error = caught.value
    assert isinstance(error, ReplayError)
    assert (error.path, error.line, error.reason) == (path, 3, "price 'abc' is not a number")


def test_malformed_subgraph_json_points_at_the_field(tmp_path: Path) -> None:
    records = [
        {"date": 86400 * d, "token0Price": "2", "token1Price": "0.5", "tvlUSD": "10"}
        for d in range(3)
    ]
    records[2]["tvlUSD"] = "lots"
    text = json.dumps({"data": {"poolDayDatas": records}}, indent=2)
    path = write(tmp_path / "pool.json", text)
    line = text.splitlines().index('        "tvlUSD": "lots"') + 1
    assert (
        error_of([path], price_field="token0Price")
        == f"{path}:{line}: tvlUSD 'lots' is not a number"
    )
    broken = write(tmp_path / "broken.json", '{"data": {"poolDayDatas": [\n{"date": 1,}\n]}}')
    assert error_of([broken], price_field="token0Price").startswith(f"{broken}:2: not valid JSON")


def test_malformed_feather_names_the_row(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "date": pd.to_datetime(
                ["2020-01-01 00:00", "2020-01-01 01:00", "2020-01-01 02:00"], utc=True
            ),
            "open": [1.0, 1.0, 1.0],
            "high": [1.0, 1.0, 1.0],
            "low": [1.0, 1.0, 1.0],
            "close": [1.0, -2.0, 1.0],
            "volume": [1.0, 1.0, 1.0],
        }
    )
    path = tmp_path / "bars.feather"
    frame.to_feather(path)
    assert error_of([str(path)]) == f"{path}: row 2: close -2 must be > 0"
    s = one(load([str(path)], skip_bad_rows=True))
    assert (len(s), s.skipped_rows) == (2, 1)
    assert s.time.tolist() == [utc(2020, 1, 1, 1), utc(2020, 1, 1, 3)]


# -- skipping -----------------------------------------------------------------------------------


def test_skip_bad_rows_counts_them(tmp_path: Path) -> None:
    path = write(
        tmp_path / "data.csv",
        "time,price,volume\n1,1,0\n2,abc,0\n3,3,0\n4,-1,0\nnever,5,0\n6,6,0,9\n7,7,-1\n8,8,0\n",
    )
    s = one(load([path], skip_bad_rows=True))
    assert s.time.tolist() == [1, 3, 8]
    assert s.skipped_rows == 5


def test_skipped_rows_count_for_their_pool(tmp_path: Path) -> None:
    path = write(
        tmp_path / "pools.csv",
        "time,price,pool\n1,1,A\n1,x,B\n2,2,B\n3,x,B\n4,4,\n5,5,A\n",
    )
    a, b = load([path], skip_bad_rows=True)
    assert (a.pool, a.time.tolist(), a.skipped_rows) == ("A", [1, 5], 1)  # + the unnamed row
    assert (b.pool, b.time.tolist(), b.skipped_rows) == ("B", [2], 2)


def test_nothing_valid_left(tmp_path: Path) -> None:
    path = write(tmp_path / "data.csv", "time,price\n1,x\n2,0\n")
    assert (
        error_of([path], skip_bad_rows=True)
        == f"{path}: pool 'data' has no valid rows (2 malformed rows skipped)"
    )
    header_only = write(tmp_path / "header.csv", "time,price\n")
    assert error_of([header_only]) == f"{header_only}: pool 'header' has no valid rows"


# -- small pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1600000000", 1600000000),
        ("2020-03-12", utc(2020, 3, 12)),
        ("2020-03-12T06:30:00Z", utc(2020, 3, 12, 6, 30)),
        ("2020-03-12T08:30:00+02:00", utc(2020, 3, 12, 6, 30)),
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text) == expected


def test_parse_time_rejects_garbage() -> None:
    with pytest.raises(ReplayError, match="'soon' is not an ISO 8601 date or unix seconds"):
        parse_time("soon")


def _series(time: list[int], price: list[float]) -> ReplaySeries:
    n = len(time)
    return ReplaySeries(
        pool="p",
        source="x",
        time=np.array(time, dtype=np.int64),
        price=np.array(price),
        tvl=np.full(n, np.nan),
        volume=np.zeros(n),
        tick_tvl=np.full(n, np.nan),
    )


@pytest.mark.parametrize(
    ("time", "price", "problem"),
    [
        ([2, 1], [1.0, 1.0], "strictly increasing"),
        ([1, 1], [1.0, 1.0], "strictly increasing"),
        ([1, 2], [1.0, 0.0], "price must be positive"),
        ([], [], "has no rows"),
    ],
)
def test_series_checks_itself(time: list[int], price: list[float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        _series(time, price)


def test_series_leaves_the_callers_arrays_writable() -> None:
    price = np.array([1.0, 2.0])
    s = ReplaySeries(
        pool="p",
        source="x",
        time=np.array([1, 2], dtype=np.int64),
        price=price,
        tvl=np.full(2, np.nan),
        volume=np.zeros(2),
        tick_tvl=np.full(2, np.nan),
    )
    assert price.flags.writeable
    assert not s.price.flags.writeable


def test_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes("\ufefftime,price\r\n1,2\r\n\r\n2,x\r\n".encode())
    assert detect_format(path) == "csv"
    assert error_of([str(path)]) == f"{path}:4: price 'x' is not a number"


def test_bar_length_of_a_one_bar_file(tmp_path: Path) -> None:
    bar = "date,open,high,low,close,volume\n2020-01-01 00:00:00,1,1,1,2,3\n"
    named = one(load([write(tmp_path / "ETH_USDT-4h.csv", bar)]))
    assert named.time.tolist() == [utc(2020, 1, 1, 4)]
    assert named.volume.tolist() == [6.0]  # 3 base at a close of 2
    assert "cannot tell the bar length" in error_of([write(tmp_path / "one.csv", bar)])
