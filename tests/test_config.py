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
