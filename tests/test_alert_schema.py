"""``docs/schema/alert.v1.json`` against the alerts the pipeline makes.

Every kind of event the pipeline produces (firing with a put or a collar, with and
without a configured position, repeats, resolved, retracted after a reorg, warm-up
values that are NaN and so ``null``, a backtest's empty block hash) validates against
the published schema after a JSON round trip, as a consumer receives it; payloads
broken in the ways a consumer would trip over do not.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from dataclasses import replace
from functools import cache
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.alert import ALERT_VALUE_NAMES, Alert
from rules.calendar import CalendarWindow
from rules.expr import parse
from rules.features.engine import FeatureParams
from rules.hedge.advice import HedgeSpec, Position
from rules.layers.engine import LayerSpec
from rules.pipeline import Pipeline, PipelineSpec, PoolInfo
from rules.types import FEATURE_NAMES, PoolId
from tests.alert_schema import SCHEMA_PATH, alert_errors, schema

T0 = 1_700_000_040  # a minute boundary
CONFIGURED = PoolId("devchain", "0x88e6A0c2dDD26FEEb64F039a2c41296FcB3f5640")
BARE = PoolId("devchain", "0x" + "22" * 20)


def layers(repeat_interval: int = 0) -> tuple[LayerSpec, ...]:
    return (
        LayerSpec(
            name="L1",
            level=1,
            # tvl_drain_1h is not in the DESIGN.md value set: it joins `values`.
            when=parse("price > 2000 and tvl_drain_1h >= 0", FEATURE_NAMES),
            repeat_interval=repeat_interval,
            hedge=HedgeSpec("collar", -2.0, 0.5, 14 * 86400, call_sigma=1.0, spread=0.02),
        ),
        LayerSpec(
            name="L2",
            level=2,
            when=parse("price > 2100", FEATURE_NAMES),
            hedge=HedgeSpec("put", -1.0, 0.25, 7 * 86400),
        ),
        LayerSpec(name="L3", level=3, when=parse("price > 2200", FEATURE_NAMES)),
    )


def pipeline(*, repeat_interval: int = 0, calendar: tuple[CalendarWindow, ...] = ()) -> Pipeline:
    spec = PipelineSpec(
        features=FeatureParams(bar_interval=60, sigma_window=10, realized_vol_window=10),
        layers=layers(repeat_interval),
        calendar=calendar,
        reorg_depth=16,
    )
    pools = [
        PoolInfo(
            CONFIGURED,
            1,
            "ETH/USDC 0.05%",
            fee=0.0005,
            position=Position(lower=1500.0, upper=2600.0, value=250_000.0),
        ),
        PoolInfo(BARE, 1, "WETH/USDC 0.3%", fee=0.003),
    ]
    return Pipeline(spec, pools)


def payload(alert: Alert) -> dict[str, Any]:
    """What a consumer receives: the published bytes, parsed."""
    parsed: dict[str, Any] = json.loads(alert.to_json())
    return parsed


def live_alerts(prices: list[float], *, repeat_interval: int = 0) -> list[Alert]:
    """Both pools stepped block by block on ``prices`` (one block a minute), then the
    last three blocks removed by a reorg: the alerts in publication order."""
    pipe = pipeline(repeat_interval=repeat_interval)
    rows = np.arange(2, dtype=np.int64)
    out: list[Alert] = []
    for i, p in enumerate(prices):
        result = pipe.step(
            T0 + 60 * i,
            rows,
            np.array([p, p * 1.001]),
            np.array([1e7, 4e6]),
            np.array([1e6, 2e5]),
            np.array([1e4, 3e3]),
            np.array([3, 1], dtype=np.int64),
            np.array([0, 0], dtype=np.int64),
            block=19_000_000 + i,
            block_hash=f"0x{i:064x}",
            chain="devchain",
        )
        out += result.alerts
    retracted, _ = pipe.rollback("devchain", 19_000_000 + len(prices) - 4)
    return out + retracted


PRICES = [2050.0, 2050.0, 2050.0, 2150.0, 2150.0, 2250.0, 2250.0, 1900.0, 1900.0, 2150.0]


def test_the_schema_is_valid_draft_2020_12_and_names_the_code_s_features() -> None:
    document = schema()  # check_schema runs on load
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    values = document["properties"]["values"]
    assert values["required"] == list(ALERT_VALUE_NAMES)
    # A feature added to the engine must be added to the schema (and the reverse).
    assert values["propertyNames"]["enum"] == list(FEATURE_NAMES)


def test_the_documented_alert_examples_validate() -> None:
    """The examples a reader copies from (README, docs/mqtt.md) are real payloads."""
    root = SCHEMA_PATH.parent.parent.parent
    found = 0
    for doc in (root / "README.md", root / "docs" / "mqtt.md"):
        for block in re.findall(r"```json\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
            if '"schema": "alvh.alert.v1"' in block:
                assert alert_errors(json.loads(block)) == [], doc
                found += 1
    assert found == 2


def test_every_kind_of_pipeline_alert_validates() -> None:
    alerts = live_alerts(PRICES, repeat_interval=120)
    payloads = [payload(a) for a in alerts]
    for p in payloads:
        assert alert_errors(p) == [], p
    # The test covers what it claims: each kind is there.
    kinds = {
        (
            p["event"],
            p["repeat"],
            (p["hedge"] or {}).get("instrument"),
            (p["hedge"] or {}).get("position"),
        )
        for p in payloads
    }
    assert ("firing", False, "collar", "configured") in kinds
    assert ("firing", False, "put", "notional-1-quote") in kinds
    assert ("firing", True, "collar", "configured") in kinds
    assert ("firing", False, None, None) in kinds  # L3: a layer without a hedge
    assert ("resolved", False, None, None) in kinds
    retracted = [p for p in payloads if p["event"] == "retracted"]
    assert retracted
    assert {p["retracts"] for p in retracted} <= {p["id"] for p in payloads}
    # Warm-up: RSI, MACD and sigma are NaN in the first bars and published as null.
    first = payloads[0]
    assert first["values"]["rsi"] is None
    assert first["values"]["move_sigma"] is None
    assert first["values"]["tvl_drain_1h"] == 0.0
    collar = next(p["hedge"] for p in payloads if (p["hedge"] or {}).get("instrument") == "collar")
    assert collar["call_strike"] > collar["strike"] > 0


def test_nan_and_infinite_values_are_null_and_validate() -> None:
    (fired,) = [
        a
        for a in live_alerts(PRICES[:1])
        if (a.event, a.layer, a.pool) == ("firing", "L1", CONFIGURED.address)
    ]
    values = dict(fired.values) | {"rsi": math.nan, "iv": math.inf, "tvl_volume_ratio": -math.inf}
    p = payload(replace(fired, values=values))
    assert (p["values"]["rsi"], p["values"]["iv"], p["values"]["tvl_volume_ratio"]) == (
        None,
        None,
        None,
    )
    assert alert_errors(p) == []


def test_backtest_alerts_with_an_empty_block_hash_validate() -> None:
    pipe = pipeline()
    n = len(PRICES)
    price = np.array([[p, p * 1.001] for p in PRICES])
    batch = pipe.step_many(
        T0 + 3600 * np.arange(n, dtype=np.int64),
        price,
        np.full((n, 2), 1e7),
        np.full((n, 2), 1e6),
        np.full((n, 2), 1e4),
        np.zeros((n, 2), dtype=np.int64),
        np.zeros((n, 2), dtype=np.int64),
        blocks=np.arange(n, dtype=np.int64),
        statuses=False,
    )
    assert batch.alerts
    for alert in batch.alerts:
        p = payload(alert)
        assert p["block_hash"] == ""
        assert alert_errors(p) == []


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(1800.0, 2400.0), min_size=1, max_size=40),
    st.sampled_from([0, 60, 180]),
)
def test_any_price_path_gives_only_valid_alerts(prices: list[float], repeat: int) -> None:
    for alert in live_alerts(prices, repeat_interval=repeat):
        assert alert_errors(payload(alert)) == []


@cache
def _valid() -> dict[str, dict[str, Any]]:
    payloads = [payload(a) for a in live_alerts(PRICES, repeat_interval=120)]
    return {
        "collar": next(p for p in payloads if (p["hedge"] or {}).get("instrument") == "collar"),
        "put": next(p for p in payloads if (p["hedge"] or {}).get("instrument") == "put"),
        "resolved": next(p for p in payloads if p["event"] == "resolved"),
        "retracted": next(p for p in payloads if p["event"] == "retracted"),
    }


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda p: p.pop(key)


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(p: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            p = p[part]
        p[last] = value

    return change


BROKEN: list[tuple[str, str, Callable[[dict[str, Any]], None], str]] = [
    # (case, valid payload it starts from, the breakage, JSON path the error names)
    ("no id", "collar", _drop("id"), "$"),
    ("another schema", "collar", _set("schema", "alvh.alert.v2"), "$.schema"),
    ("unknown event", "collar", _set("event", "fired"), "$.event"),
    ("id not 32 hex", "collar", _set("id", "not-an-id"), "$.id"),
    ("pool not an address", "collar", _set("pool", "0x88e6"), "$.pool"),
    ("local time", "collar", _set("time", "2026-05-07T14:30:00+02:00"), "$.time"),
    ("string number", "collar", _set("values.price", "2050.0"), "$.values.price"),
    ("missing DESIGN value", "collar", lambda p: p["values"].pop("rsi"), "$.values"),
    ("unknown feature", "collar", _set("values.rsii", 1.0), "$.values"),
    ("unknown field", "collar", _set("colour", "red"), "$"),
    ("collar without call", "collar", lambda p: p["hedge"].pop("call_strike"), "$.hedge"),
    ("put with call", "put", _set("hedge.call_strike", 2500.0), "$.hedge"),
    ("positive IL", "put", _set("hedge.il_now", 0.01), "$.hedge"),
    ("break-even of 3", "put", _set("hedge.break_even", [1.0, 2.0, 3.0]), "$.hedge"),
    (
        "hedge on resolved",
        "resolved",
        lambda p: p.update(hedge=_valid()["put"]["hedge"]),
        "$.hedge",
    ),
    ("resolved that retracts", "resolved", _set("retracts", "0" * 32), "$"),
    ("retracted without retracts", "retracted", _drop("retracts"), "$"),
    ("level 0", "collar", _set("level", 0), "$.level"),
    ("bool repeat as int", "collar", _set("repeat", 1), "$.repeat"),
]


@pytest.mark.parametrize(("case", "base", "breakage", "where"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_payloads_do_not_validate(
    case: str, base: str, breakage: Callable[[dict[str, Any]], None], where: str
) -> None:
    p = copy.deepcopy(_valid()[base])
    assert alert_errors(p) == []
    breakage(p)
    errors = alert_errors(p)
    assert errors, case
    assert any(e.startswith(f"{where}:") for e in errors), errors
