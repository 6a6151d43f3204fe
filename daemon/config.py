"""Configuration: TOML parsed once into typed, validated objects.

Guarantees:
- unknown keys are errors, at every level;
- every problem of a file is reported at once, one line each, prefixed with its
  path (``pools[2].address: ...``): each section and each list item is validated
  on its own, and cross-references (a pool's chain, layer names) are checked on
  whatever parsed;
- rule expressions are parsed here (never evaluated), against the feature names
  the engine produces, so a config that loads cannot fail on an unknown name later;
- secrets (the MQTT password) are never part of ``repr`` or of an error message.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from eth_utils.address import is_checksum_address, is_hex_address, to_checksum_address
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from rules.calendar import CalendarWindow, CronError, parse_cron
from rules.durations import format_duration, parse_duration, parse_iso_utc
from rules.expr import Expr, ExprError, parse
from rules.features.params import FeatureParams
from rules.hedge.advice import HedgeSpec, Position
from rules.layers.engine import LayerSpec
from rules.pipeline import PipelineSpec, PoolInfo
from rules.types import FEATURE_NAMES, PoolId

MULTICALL3_ADDRESS = "0xcA11bde05977b3631167028862bE2a173976CA11"
#: The least default ``[[chains]] stale_after``: a minute without a new head (5 missed
#: Ethereum slots in a row, which is rare; faster chains make blocks every few seconds).
CHAIN_STALE_MIN = 60
#: The default ``[[layers]] stale_after`` is ``max(LAYER_STALE_MIN, LAYER_STALE_BARS bars)``:
#: long enough that a failed read, an RPC outage of minutes or one missing data row never
#: resolves a layer, short enough that a layer does not fire for days on inputs nobody sees.
LAYER_STALE_MIN = 3600
LAYER_STALE_BARS = 3


class ConfigError(Exception):
    """The config is invalid. ``errors`` holds one line per problem, each with its path."""

    def __init__(self, errors: list[str], source: str = "") -> None:
        self.errors = errors
        self.source = source
        super().__init__("\n".join(errors))


def _duration(value: object) -> int:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return parse_duration(value)
    raise ValueError("a duration must be a string like '5m' or a number of seconds")


Duration = Annotated[int, BeforeValidator(_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DaemonConfig(_Model):
    state_dir: Path = Path("/var/lib/alvh")
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    checkpoint_interval: Duration = 30
    outbox_max: int = Field(default=100_000, ge=100)
    reorg_depth: int = Field(default=64, ge=1, le=10_000)


class MqttConfig(_Model):
    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    topic_prefix: str = "alvh"
    qos: Literal[0, 1, 2] = 1
    client_id: str | None = None
    keepalive: Duration = 30
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    telemetry_interval: Duration = 10
    reconnect_max: Duration = 30
    message_expiry: Duration | None = None
    homeassistant: bool = False
    homeassistant_prefix: str = "homeassistant"
    commands: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.password:
            raise ValueError(
                "do not put the password in the url: use password_file or password_env"
            )
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"scheme must be mqtt:// or mqtts://, got {value!r}")
        if not parts.hostname:
            raise ValueError(f"no host in {value!r}")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}") from exc
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if (
            not value
            or any(c in value for c in "+#\0")
            or value.startswith("/")
            or value.endswith("/")
        ):
            raise ValueError(
                f"invalid topic prefix {value!r} (no wildcards, no leading/trailing '/')"
            )
        return value

    @model_validator(mode="after")
    def _secrets(self) -> MqttConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give password_file or password_env, not both")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    @property
    def host(self) -> str:
        host = urlsplit(self.url).hostname
        assert host is not None
        return host

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    def password(self) -> str | None:
        """Read the password from its file or environment variable (never stored in the config)."""
        if self.password_file is not None:
            try:
                return self.password_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    [f"mqtt.password_file: cannot read {self.password_file}: {exc.strerror}"]
                ) from exc
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    [f"mqtt.password_env: environment variable {self.password_env} is not set"]
                )
            return value
        return None


def _rpc_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError(f"RPC url must be http(s):// or ws(s):// with a host, got {value!r}")
    return value


class ChainConfig(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    chain_id: int = Field(gt=0)
    rpc: list[Annotated[str, BeforeValidator(_rpc_url)]] = Field(min_length=1)
    poll_interval: Duration | Literal["head"] = 2
    confirmations: int = Field(default=0, ge=0, le=1000)
    request_timeout: Duration = 10
    backfill_batch: int = Field(default=200, ge=1, le=10_000)
    multicall: str | None = MULTICALL3_ADDRESS
    stale_after: Duration | None = None

    @field_validator("stale_after")
    @classmethod
    def _stale(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            raise ValueError("stale_after must be positive")
        return value

    @property
    def stale_seconds(self) -> int:
        """How long without a new head before the chain is reported stale (``stale_after``,
        by default 10 polling intervals and at least a minute)."""
        if self.stale_after is not None:
            return self.stale_after
        polls = 0 if self.poll_interval == "head" else 10 * self.poll_interval
        return max(CHAIN_STALE_MIN, polls)

    @field_validator("poll_interval", mode="before")
    @classmethod
    def _poll(cls, value: object) -> object:
        if value == "head":
            return value
        seconds = _duration(value)
        if seconds <= 0:
            raise ValueError("poll_interval must be positive (or 'head')")
        return seconds

    @field_validator("multicall")
    @classmethod
    def _multicall(cls, value: str | None) -> str | None:
        return None if value is None else _address(value)

    @field_validator("rpc")
    @classmethod
    def _needs_http(cls, value: list[str]) -> list[str]:
        # ws(s):// endpoints only carry the eth_subscribe newHeads stream.
        if not any(u.startswith(("http://", "https://")) for u in value):
            raise ValueError(
                "at least one http(s):// URL is needed (ws:// URLs only stream new heads)"
            )
        return value


def _address(value: str) -> str:
    if not isinstance(value, str) or not is_hex_address(value):
        raise ValueError(f"not a 20-byte hex address: {value!r}")
    if value != value.lower() and value[2:] != value[2:].upper() and not is_checksum_address(value):
        raise ValueError(
            f"bad EIP-55 checksum in {value!r} (expected {to_checksum_address(value)})"
        )
    return str(to_checksum_address(value))


class PositionConfig(_Model):
    lower: float = Field(default=0.0, ge=0)
    upper: float = Field(default=math.inf, gt=0)
    value: float = Field(gt=0)
    entry_price: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> PositionConfig:
        if not self.lower < self.upper:
            raise ValueError(
                f"position.lower ({self.lower}) must be below position.upper ({self.upper})"
            )
        return self


class PoolConfig(_Model):
    chain: str
    address: Annotated[str, BeforeValidator(_address)]
    kind: Literal["uniswap_v3", "uniswap_v2"] = "uniswap_v3"
    name: str | None = None
    quote: Literal["token0", "token1"] = "token0"
    fee: float | None = Field(default=None, ge=0, lt=1)
    position: PositionConfig | None = None


class BarsConfig(_Model):
    interval: Duration = 300

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: int) -> int:
        if value <= 0 or (86400 % value != 0 and value % 86400 != 0):
            raise ValueError("interval must divide a day (e.g. 1m, 5m, 1h) or be whole days")
        return value


class FeaturesConfig(_Model):
    rsi_period: int = Field(default=14, ge=2)
    macd_fast: int = Field(default=12, ge=2)
    macd_slow: int = Field(default=26, ge=2)
    macd_signal: int = Field(default=9, ge=1)
    bb_period: int = Field(default=20, ge=2)
    bb_nbdev: float = Field(default=2.0, gt=0)
    sigma_window: int = Field(default=48, ge=2)
    realized_vol_window: int = Field(default=48, ge=2)
    corr_window: int = Field(default=48, ge=2)
    mev_window: Duration = 3600

    @model_validator(mode="after")
    def _macd(self) -> FeaturesConfig:
        if self.macd_fast >= self.macd_slow:
            raise ValueError("macd_fast must be below macd_slow")
        return self


class HedgeConfig(_Model):
    instrument: Literal["put", "collar"]
    strike_sigma: float = Field(lt=0)
    call_sigma: float | None = Field(default=None, gt=0)
    coverage: float = Field(gt=0, le=1)
    expiry: Duration
    spread: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _collar(self) -> HedgeConfig:
        if self.instrument == "collar" and self.call_sigma is None:
            raise ValueError("a collar needs call_sigma")
        if self.instrument == "put" and self.call_sigma is not None:
            raise ValueError("call_sigma is only for collars")
        if self.expiry <= 0:
            raise ValueError("expiry must be positive")
        return self


def _expr_validator(boolean: bool) -> Callable[[object], Expr]:
    def check(value: object) -> Expr:
        if isinstance(value, Expr):
            return value
        if not isinstance(value, str):
            raise ValueError("a rule expression must be a string")
        try:
            return parse(value, FEATURE_NAMES, boolean=boolean)
        except ExprError as exc:
            raise ValueError(str(exc)) from None

    return check


RuleExpr = Annotated[Expr, BeforeValidator(_expr_validator(True))]


class LayerConfig(_Model):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, arbitrary_types_allowed=True
    )

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    level: int = Field(ge=1, le=9)
    when: RuleExpr
    clear_when: RuleExpr | None = None
    for_: Duration = Field(default=0, alias="for")
    keep_firing_for: Duration = 0
    cooldown: Duration = 0
    repeat_interval: Duration = 0
    inhibit_lower: bool = False
    description: str = ""
    hedge: HedgeConfig | None = None
    stale_after: Duration | Literal["never"] | None = None

    @field_validator("stale_after", mode="before")
    @classmethod
    def _stale(cls, value: object) -> object:
        if value == "never" or value is None:
            return value
        seconds = _duration(value)
        if seconds <= 0:
            raise ValueError("stale_after must be positive (or 'never')")
        return seconds

    def stale_seconds(self, bar_interval: int) -> int:
        """``stale_after`` in seconds for the loop (0: never); the default depends on the
        bar interval (:data:`LAYER_STALE_BARS`)."""
        if self.stale_after == "never":
            return 0
        if self.stale_after is not None:
            return self.stale_after
        return max(LAYER_STALE_MIN, LAYER_STALE_BARS * bar_interval)


class CalendarConfig(_Model):
    name: str
    cron: str | None = None
    dates: list[str] = Field(default_factory=list)
    before: Duration = 0
    after: Duration = 0
    threshold_scale: float = Field(gt=0, le=10)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_cron(value)
            except CronError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("dates")
    @classmethod
    def _dates(cls, value: list[str]) -> list[str]:
        for i, text in enumerate(value):
            try:
                parse_iso_utc(text)
            except ValueError:
                raise ValueError(f"dates[{i}]: invalid ISO 8601 time {text!r}") from None
        return value

    @model_validator(mode="after")
    def _when(self) -> CalendarConfig:
        if self.cron is None and not self.dates:
            raise ValueError("a calendar window needs cron or dates")
        if self.before == 0 and self.after == 0:
            raise ValueError("a calendar window needs before and/or after > 0")
        return self


class HttpConfig(_Model):
    listen: str = "127.0.0.1:9480"
    metrics: bool = True
    dashboard: bool = True
    broker_ws_url: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"listen must be host:port, got {value!r}")
        return value


@dataclass(frozen=True, slots=True)
class Config:
    """A validated config. Build it with :func:`load_config` or :func:`parse_config`."""

    daemon: DaemonConfig
    mqtt: MqttConfig
    chains: tuple[ChainConfig, ...]
    pools: tuple[PoolConfig, ...]
    bars: BarsConfig
    features: FeaturesConfig
    layers: tuple[LayerConfig, ...]
    calendar: tuple[CalendarConfig, ...]
    http: HttpConfig | None
    source: str = ""

    def chain(self, name: str) -> ChainConfig:
        for chain in self.chains:
            if chain.name == name:
                return chain
        raise KeyError(name)

    def pool_infos(self, fees: Mapping[PoolId, float] | None = None) -> list[PoolInfo]:
        """Pipeline rows, in config order. ``fees`` (read on chain) fill unset fee tiers."""
        out = []
        for pool in self.pools:
            pid = PoolId(pool.chain, pool.address)
            fee = pool.fee if pool.fee is not None else (fees or {}).get(pid, math.nan)
            if pool.fee is None and pool.kind == "uniswap_v2" and math.isnan(fee):
                fee = 0.003
            position = None
            if pool.position is not None:
                p = pool.position
                position = Position(
                    lower=p.lower,
                    upper=p.upper,
                    value=p.value,
                    entry_price=p.entry_price if p.entry_price is not None else math.nan,
                )
            out.append(
                PoolInfo(
                    pool=pid,
                    chain_id=self.chain(pool.chain).chain_id,
                    name=pool.name or f"{pool.kind} {pool.address[:10]}",
                    fee=fee,
                    position=position,
                )
            )
        return out

    def feature_params(self) -> FeatureParams:
        return Config.feature_params_of(self.bars, self.features)

    @staticmethod
    def feature_params_of(bars: BarsConfig, f: FeaturesConfig) -> FeatureParams:
        return FeatureParams(
            bar_interval=bars.interval,
            rsi_period=f.rsi_period,
            macd_fast=f.macd_fast,
            macd_slow=f.macd_slow,
            macd_signal=f.macd_signal,
            bb_period=f.bb_period,
            bb_nbdev=f.bb_nbdev,
            sigma_window=f.sigma_window,
            realized_vol_window=f.realized_vol_window,
            corr_window=f.corr_window,
            mev_window=f.mev_window,
        )

    def layer_specs(self) -> tuple[LayerSpec, ...]:
        out = []
        for layer in self.layers:
            hedge = None
            if layer.hedge is not None:
                h = layer.hedge
                hedge = HedgeSpec(
                    instrument=h.instrument,
                    strike_sigma=h.strike_sigma,
                    coverage=h.coverage,
                    expiry=h.expiry,
                    call_sigma=h.call_sigma,
                    spread=h.spread,
                )
            out.append(
                LayerSpec(
                    name=layer.name,
                    level=layer.level,
                    when=layer.when,
                    clear_when=layer.clear_when,
                    for_=layer.for_,
                    keep_firing_for=layer.keep_firing_for,
                    cooldown=layer.cooldown,
                    repeat_interval=layer.repeat_interval,
                    inhibit_lower=layer.inhibit_lower,
                    hedge=hedge,
                    stale_after=layer.stale_seconds(self.bars.interval),
                )
            )
        return tuple(out)

    def calendar_windows(self) -> tuple[CalendarWindow, ...]:
        return tuple(
            CalendarWindow(
                name=c.name,
                cron=parse_cron(c.cron) if c.cron is not None else None,
                dates=tuple(parse_iso_utc(d) for d in c.dates),
                before=c.before,
                after=c.after,
                threshold_scale=c.threshold_scale,
            )
            for c in self.calendar
        )

    def pipeline_spec(self) -> PipelineSpec:
        return PipelineSpec(
            features=self.feature_params(),
            layers=self.layer_specs(),
            calendar=self.calendar_windows(),
            reorg_depth=self.daemon.reorg_depth,
        )


# -- loading ----------------------------------------------------------------------

_SECTIONS: dict[str, tuple[type[_Model], bool]] = {
    # name: (model, is a list of tables)
    "daemon": (DaemonConfig, False),
    "mqtt": (MqttConfig, False),
    "chains": (ChainConfig, True),
    "pools": (PoolConfig, True),
    "bars": (BarsConfig, False),
    "features": (FeaturesConfig, False),
    "layers": (LayerConfig, True),
    "calendar": (CalendarConfig, True),
    "http": (HttpConfig, False),
}

M = TypeVar("M", bound=_Model)


def _loc(prefix: str, loc: Iterable[int | str]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "json-or-python", "lax-or-strict")) or part in (
            "str",
            "int",
        ):
            # pydantic's internal union / validator branch names carry no meaning for users
            continue
        else:
            out += f".{part}" if out else part
    return out


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    for head in ("Value error, ", "Assertion failed, "):
        if msg.startswith(head):
            msg = msg[len(head) :]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    return msg


def _validate(model: type[M], data: object, path: str, errors: list[str]) -> M | None:
    try:
        return TypeAdapter(model).validate_python(data)
    except ValidationError as exc:
        seen = set()
        for err in exc.errors():
            line = f"{_loc(path, err['loc'])}: {_message(err)}"
            if line not in seen:
                seen.add(line)
                errors.append(line)
        return None


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> Config:
    """Validate a parsed TOML document. Raises :class:`ConfigError` with every problem."""
    errors: list[str] = []
    for key in data:
        if key not in _SECTIONS:
            errors.append(f"{key}: unknown section (known: {', '.join(_SECTIONS)})")
    parsed: dict[str, Any] = {}
    for name, (model, is_list) in _SECTIONS.items():
        raw = data.get(name)
        if is_list:
            items = raw if raw is not None else []
            if not isinstance(items, list):
                errors.append(f"{name}: must be an array of tables ([[{name}]])")
                parsed[name] = ()
                continue
            parsed[name] = tuple(
                v
                for i, item in enumerate(items)
                if (v := _validate(model, item, f"{name}[{i}]", errors))
            )
            parsed[name + "_raw"] = items
        else:
            if raw is None and name == "http":
                parsed[name] = None
                continue
            value = _validate(model, raw if raw is not None else {}, name, errors)
            parsed[name] = value if value is not None else model.model_construct()

    # Cross references, on the raw items so they are reported even when an item had other errors.
    chain_names = [c.get("name") for c in parsed["chains_raw"] if isinstance(c, dict)]
    if not parsed["chains_raw"]:
        errors.append("chains: at least one [[chains]] entry is required")
    for dup in sorted({n for n in chain_names if isinstance(n, str) and chain_names.count(n) > 1}):
        errors.append(f"chains: duplicate chain name {dup!r}")
    if not parsed["pools_raw"]:
        errors.append("pools: at least one [[pools]] entry is required")
    seen_pools: dict[tuple[str, str], int] = {}
    for i, pool in enumerate(parsed["pools_raw"]):
        if not isinstance(pool, dict):
            continue
        chain = pool.get("chain")
        if isinstance(chain, str) and chain not in chain_names:
            errors.append(f"pools[{i}].chain: no [[chains]] entry named {chain!r}")
        addr = pool.get("address")
        if isinstance(addr, str) and isinstance(chain, str) and is_hex_address(addr):
            pool_key = (chain, addr.lower())
            if pool_key in seen_pools:
                errors.append(f"pools[{i}].address: same pool as pools[{seen_pools[pool_key]}]")
            seen_pools.setdefault(pool_key, i)
    if not parsed["layers_raw"]:
        errors.append("layers: at least one [[layers]] entry is required")
    layer_names = [x.get("name") for x in parsed["layers_raw"] if isinstance(x, dict)]
    for i, layer_name in enumerate(layer_names):
        if isinstance(layer_name, str) and layer_names.index(layer_name) != i:
            errors.append(f"layers[{i}].name: duplicate layer name {layer_name!r}")
    if not any(e.startswith(("bars", "features")) for e in errors):
        errors += _short_windows(parsed["layers_raw"], parsed["bars"], parsed["features"])
    if errors:
        raise ConfigError(errors, source)
    return Config(
        daemon=parsed["daemon"],
        mqtt=parsed["mqtt"],
        chains=parsed["chains"],
        pools=parsed["pools"],
        bars=parsed["bars"],
        features=parsed["features"],
        layers=parsed["layers"],
        calendar=parsed["calendar"],
        http=parsed["http"],
        source=source,
    )


def _short_windows(
    layers: Iterable[object], bars: BarsConfig, features: FeaturesConfig
) -> list[str]:
    """One line per feature a layer uses that looks back less than one bar (a "1h" drain
    on daily bars would be the drain of a day: refused rather than silently redefined)."""
    params = Config.feature_params_of(bars, features)
    out = []
    for i, item in enumerate(layers):
        if not isinstance(item, dict):
            continue
        for key in ("when", "clear_when"):
            text = item.get(key)
            if not isinstance(text, str):
                continue
            try:
                names = parse(text, FEATURE_NAMES).names
            except ExprError:
                continue  # reported by the layer's own validation
            for name in sorted(names, key=FEATURE_NAMES.index):
                window = params.window(name)
                if window is None or window >= bars.interval:
                    continue
                setting = " (features.mev_window)" if name == "mev_score" else ""
                out.append(
                    f"layers[{i}].{key}: layer {item.get('name')!r} uses {name}, which looks "
                    f"back {format_duration(window)}{setting}, less than one bar "
                    f"(bars.interval = {format_duration(bars.interval)}): use shorter bars "
                    "or a feature with a window of at least one bar"
                )
    return out


_TOML_LINE = re.compile(r"at line (\d+), column (\d+)")


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML file. Raises :class:`ConfigError` (one line per problem)."""
    p = Path(path)
    try:
        text = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{p}: no such file"], str(p)) from None
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read: {exc.strerror}"], str(p)) from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([f"{p}: not UTF-8 text"], str(p)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{p}: invalid TOML: {exc}"], str(p)) from None
    return parse_config(data, str(p))
