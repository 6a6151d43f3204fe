"""Config loading and ``alvh check-config``: every error at once, each with its path."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.config import ConfigError, load_config, parse_config
from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "alvh.toml"

FIVE_MISTAKES = """
[daemon]
state_dir = "/tmp/x"
colour = "blue"                       # 1. unknown key

[[chains]]
name = "ethereum"
chain_id = 1
rpc = ["http://127.0.0.1:8545"]

[[pools]]
chain = "ethereum"
address = "0x88e6A0c2dDD26FEEb64F039a2c41296FcB3f56"    # 2. bad address (too short)

[[pools]]
chain = "arbitrum"                    # 3. no such chain
address = "0x88e6A0c2dDD26FEEb64F039a2c41296FcB3f5640"

[bars]
interval = "5 minutes"                # 4. bad duration

[[layers]]
name = "L1"
level = 1
when = "abs(move_sigma) >= 1 or rsii < 30"   # 5. unknown feature name
"""


def test_example_config_is_valid() -> None:
    cfg = load_config(EXAMPLE)
    assert [layer.name for layer in cfg.layers] == ["L1", "L2", "L3"]
    assert cfg.layers[0].cooldown == 12 * 3600
    assert str(cfg.layers[1].clear_when) == "move_sigma_4h > 1"
    assert cfg.bars.interval == 300
    assert cfg.pools[0].position is not None
    assert cfg.pools[0].position.upper == 2600.0
    spec = cfg.pipeline_spec()
    assert spec.layers[1].hedge is not None
    assert spec.layers[1].hedge.instrument == "put"
    assert spec.calendar[0].threshold_scale == 0.75


def test_five_mistakes_five_errors_with_paths(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(FIVE_MISTAKES)
    with pytest.raises(ConfigError) as info:
        load_config(f)
    errors = info.value.errors
    assert len(errors) == 5, errors
    joined = "\n".join(errors)
    assert "daemon.colour: unknown key" in joined
    assert any(e.startswith("pools[0].address:") for e in errors)
    assert "pools[1].chain: no [[chains]] entry named 'arbitrum'" in joined
    assert any(e.startswith("bars.interval:") and "5 minutes" in e for e in errors)
    assert any(e.startswith("layers[0].when:") and "rsii" in e and "column" in e for e in errors)


def test_check_config_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(FIVE_MISTAKES)
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5
    assert all(line.startswith(f"alvh: {bad}: ") for line in err)
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["check-config", str(tmp_path / "missing.toml")]) == 2
    assert capsys.readouterr().err.strip() == f"alvh: {tmp_path / 'missing.toml'}: no such file"


def test_check_config_as_a_process(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("this is not toml = = =")
    proc = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "check-config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "invalid TOML" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"mqtt": {"url": "http://x"}}, "mqtt.url: scheme must be mqtt:// or mqtts://"),
        ({"mqtt": {"url": "mqtt://u:secret@host"}}, "mqtt.url: do not put the password in the url"),
        ({"chains": [{"name": "a", "chain_id": 0, "rpc": ["http://x"]}]}, "chains[0].chain_id:"),
        ({"chains": [{"name": "a", "chain_id": 1, "rpc": []}]}, "chains[0].rpc:"),
        ({"layers": [{"name": "L1", "level": 1, "when": "rsi"}]}, "layers[0].when:"),
        (
            {"layers": [{"name": "L1", "level": 1, "when": "rsi < 30", "for": "-5m"}]},
            "layers[0].for:",
        ),
        (
            {
                "layers": [
                    {
                        "name": "L1",
                        "level": 1,
                        "when": "rsi < 30",
                        "hedge": {
                            "instrument": "collar",
                            "strike_sigma": -1,
                            "coverage": 0.5,
                            "expiry": "7d",
                        },
                    }
                ]
            },
            "layers[0].hedge: a collar needs call_sigma",
        ),
        (
            {"calendar": [{"name": "x", "cron": "61 * * * *", "threshold_scale": 0.5}]},
            "calendar[0].cron:",
        ),
        (
            {
                "pools": [
                    {"chain": "ethereum", "address": "0x88E6a0c2dDD26FEEb64F039a2c41296FcB3f5640"}
                ]
            },
            "bad EIP-55 checksum",
        ),
        ({"surprise": {}}, "surprise: unknown section"),
    ],
)
def test_individual_errors(patch: dict[str, object], expected: str) -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    data.update(patch)
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert any(expected in e for e in info.value.errors), info.value.errors


def test_secret_never_in_errors(tmp_path: Path) -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    data["mqtt"] = {"url": "mqtt://alvh:hunter2@127.0.0.1"}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert "hunter2" not in str(info.value)


def _example(**sections: object) -> dict[str, object]:
    data = tomllib.loads(EXAMPLE.read_text())
    data.update(sections)
    return data


@pytest.mark.parametrize(
    ("interval", "poll_interval", "chain_stale", "l1_stale", "layer_stale"),
    [
        # defaults: a layer 3 bars and at least 1h, a chain 10 polls and at least 1 min
        ("5m", "12s", None, None, (3600, 3600, 3600)),
        ("1d", "2s", None, None, (3 * 86400,) * 3),
        ("1h", "head", "30s", "2h", (7200, 3 * 3600, 3 * 3600)),
        ("5m", "1m", None, "never", (0, 3600, 3600)),
    ],
)
def test_stale_after_defaults_and_settings(
    interval: str,
    poll_interval: str,
    chain_stale: str | None,
    l1_stale: str | None,
    layer_stale: tuple[int, int, int],
) -> None:
    data = _example(bars={"interval": interval})
    data["layers"] = [  # type: ignore[index]
        {"name": f"L{n}", "level": n, "when": "rsi < 30"} for n in (1, 2, 3)
    ]
    if l1_stale is not None:
        data["layers"][0]["stale_after"] = l1_stale  # type: ignore[index]
    chain = data["chains"][0]  # type: ignore[index]
    chain["poll_interval"] = poll_interval
    if chain_stale is not None:
        chain["stale_after"] = chain_stale
    cfg = parse_config(data)
    assert tuple(spec.stale_after for spec in cfg.layer_specs()) == layer_stale
    expected_chain = {"12s": 120, "2s": 60, "head": 30, "1m": 600}[poll_interval]
    assert cfg.chains[0].stale_seconds == expected_chain


@pytest.mark.parametrize(
    ("where", "value", "expected"),
    [
        ("layers", "0s", "layers[0].stale_after: stale_after must be positive (or 'never')"),
        ("layers", "soon", "layers[0].stale_after: invalid duration 'soon'"),
        ("chains", 0, "chains[0].stale_after: stale_after must be positive"),
        ("chains", "never", "chains[0].stale_after: invalid duration 'never'"),
    ],
)
def test_stale_after_errors(where: str, value: object, expected: str) -> None:
    data = _example()
    data[where][0]["stale_after"] = value  # type: ignore[index]
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert len(info.value.errors) == 1, info.value.errors
    assert info.value.errors[0].startswith(expected), info.value.errors


def test_a_feature_looking_back_less_than_a_bar_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = EXAMPLE.read_text().replace('interval = "5m"', 'interval = "1d"')
    daily = tmp_path / "daily.toml"
    daily.write_text(text)
    assert main(["check-config", str(daily)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"alvh: {daily}: layers[{i}].{key}: layer 'L{i + 1}' uses {name}, which looks back "
        f"{window}{setting}, less than one bar (bars.interval = 1d): use shorter bars or a "
        "feature with a window of at least one bar"
        for i, key, name, window, setting in (
            (0, "clear_when", "move_sigma_1h", "1h", ""),
            (1, "clear_when", "move_sigma_4h", "4h", ""),
            (2, "when", "tvl_drain_1h", "1h", ""),
            (2, "when", "mev_score", "1h", " (features.mev_window)"),
        )
    ]
    # The same file with windows of at least a bar loads; so do hourly bars (equal windows).
    fixed = (
        text.replace("tvl_drain_1h >= 0.2", "drawdown_24h >= 0.2")
        .replace("move_sigma_1h > 0.5", "move_sigma > 0.5")
        .replace("move_sigma_4h > 1", "move_sigma > 1")
        .replace("[bars]", '[features]\nmev_window = "1d"\n\n[bars]')
    )
    daily.write_text(fixed)
    assert main(["check-config", str(daily)]) == 0
    hourly = tmp_path / "hourly.toml"
    hourly.write_text(EXAMPLE.read_text().replace('interval = "5m"', 'interval = "1h"'))
    assert main(["check-config", str(hourly)]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    ("interval", "when", "feature"),
    [
        ("2h", "move_sigma_1h > 2", "move_sigma_1h"),
        ("6h", "abs(move_sigma_4h) > 2", "move_sigma_4h"),
        ("2d", "rsi < 30", None),
        ("2d", "iv > 1 or rsi < 30", "iv"),
        ("2d", "tvl_volume_ratio > 10", "tvl_volume_ratio"),
        ("2d", "drawdown_24h > 0.1", "drawdown_24h"),
        ("1d", "move_sigma_24h < -2 and volume_24h > 0", None),
    ],
)
def test_every_fixed_window_feature_is_checked(
    interval: str, when: str, feature: str | None
) -> None:
    data = _example(bars={"interval": interval})
    data["layers"] = [{"name": "X", "level": 1, "clear_when": when, "when": "rsi < 30"}]
    if feature is None:
        parse_config(data)
        return
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    (line,) = info.value.errors
    assert line.startswith(f"layers[0].clear_when: layer 'X' uses {feature}, which looks back")
    assert f"(bars.interval = {interval})" in line
