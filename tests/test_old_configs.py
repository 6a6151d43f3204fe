"""Configs written for earlier versions keep loading unchanged: DESIGN.md's own example
and the example config alvh 0.1.0 shipped (both copied verbatim into tests/fixtures), and
every TOML snippet of the README merged into the shipped example."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.config import parse_config
from tests.conftest import REPO_ROOT

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OLD_CONFIGS = ("design-config.toml", "example-config-0.1.toml")


@pytest.mark.parametrize("name", OLD_CONFIGS)
def test_an_old_config_passes_check_config(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / name
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: ok" in out
    assert "layers:   L1(level 1), L2(level 2), L3(level 3)" in out


@pytest.mark.parametrize("name", OLD_CONFIGS)
def test_an_old_config_keeps_its_layers_and_hedges(name: str) -> None:
    cfg = parse_config(tomllib.loads((FIXTURES / name).read_text()))
    layers = {layer.name: layer for layer in cfg.layers}
    assert sorted(layers) == ["L1", "L2", "L3"]
    spec = cfg.pipeline_spec()
    by_name = {layer.name: layer for layer in spec.layers}
    assert by_name["L1"].for_ == 600
    assert by_name["L1"].keep_firing_for == 1800
    hedge_l1, hedge_l2 = by_name["L1"].hedge, by_name["L2"].hedge
    assert hedge_l1 is not None
    assert hedge_l1.instrument == "put"
    assert hedge_l2 is not None
    assert hedge_l2.instrument == "collar"
    assert by_name["L3"].hedge is None


def _readme_snippets() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    return re.findall(r"```toml\n(.*?)```", text, flags=re.S)


def test_the_readme_has_config_snippets() -> None:
    assert len(_readme_snippets()) >= 2


@pytest.mark.parametrize("index", range(len(_readme_snippets())))
def test_each_readme_snippet_loads_in_the_example(index: int) -> None:
    snippet = _readme_snippets()[index]
    base = (REPO_ROOT / "examples" / "alvh.toml").read_text()
    lines = snippet.splitlines()
    if all(line.startswith("hedge = ") or not line.strip() for line in lines):
        # Alternative `hedge = {...}` lines for a layer: each replaces L1's hedge.
        variants = [line for line in lines if line.strip()]
    else:
        variants = [snippet]
    for variant in variants:
        if variant.startswith("hedge = "):
            text = re.sub(r"(?m)^hedge = .*$", variant, base, count=1)
        else:
            stripped = re.sub(r"(?ms)^\[http\].*?(?=^\[|\Z)", "", base)
            text = stripped + "\n" + variant
        cfg = parse_config(tomllib.loads(text))
        table = tomllib.loads(variant if not variant.startswith("hedge = ") else f"[x]\n{variant}")
        if "calendar" in table:
            names = [w.name for w in cfg.calendar]
            assert names[-len(table["calendar"]) :] == [w["name"] for w in table["calendar"]]
        elif "http" in table:
            assert cfg.http is not None
            assert cfg.http.broker_ws_url == table["http"]["broker_ws_url"]
        else:
            hedge = cfg.pipeline_spec().layers[0].hedge
            assert hedge is not None
            assert hedge.instrument == table["x"]["hedge"]["instrument"]
