"""Home Assistant MQTT discovery (``[mqtt] homeassistant = true``).

Pure builders (:func:`discovery_messages`) turn the configured pools and layers into
discovery configs; :func:`attach` publishes them for one run of the daemon, from the
:class:`~daemon.service.runtime.Runtime` it is given.

Guarantees:

- one ``sensor`` per pool and key feature (:data:`FEATURE_SENSORS`), reading the retained
  pool topic ``{prefix}/pools/{chain}/{pool}`` through a ``value_template``; one
  ``binary_sensor`` (device class ``problem``) per pool and layer, reading the retained
  layer topic, ``ON`` exactly when the layer's state is ``firing``;
- every entity is ``unavailable`` unless ``{prefix}/status`` says ``online`` (the
  daemon's retained status and last will), and a pool's entities are grouped as one
  device per pool (manufacturer ``alvh``);
- discovery topics are ``{discovery_prefix}/{component}/{node_id}/{object_id}/config``
  where node and object ids use only ``[a-zA-Z0-9_-]`` (Home Assistant's rule), are
  stable for a given config, and unique (a collision after sanitising raises);
- templates never fail on a degraded pool (no ``features``) or a null feature: the
  state becomes ``None`` (unknown) instead;
- configs are retained, re-sent when Home Assistant announces itself (``online`` on
  ``{discovery_prefix}/status``), and configs of pools or layers no longer configured
  (or of all, when the option is turned off) are deleted with an empty retained payload.

Home Assistant 2025.10 deprecated ``object_id`` in discovery payloads in favour of
``default_entity_id`` (removed in 2026.4), so payloads carry ``default_entity_id``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import structlog

from daemon import __version__

if TYPE_CHECKING:
    import aiomqtt

    from daemon.service.runtime import Runtime

log = structlog.get_logger(component="alvh.homeassistant")

Component = Literal["sensor", "binary_sensor"]

MANUFACTURER = "alvh"
KV_KEY = "homeassistant.v1"
#: How often (seconds) the configs are rebuilt: names and quote symbols are read on chain
#: after start; unchanged configs are not re-sent (the publisher dedupes retained values).
REFRESH_SECONDS = 10

_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_ENTITY_CHARS = re.compile(r"[^a-z0-9_]")


@dataclass(frozen=True, slots=True)
class FeatureSensor:
    """One pool feature exposed as a sensor; ``scale`` turns fractions into percent."""

    feature: str
    name: str
    unit: str | None = None
    scale: float = 1.0
    precision: int | None = None
    icon: str | None = None
    quote_unit: bool = False


#: The key features of a pool, as Home Assistant sensors.
FEATURE_SENSORS: tuple[FeatureSensor, ...] = (
    FeatureSensor("price", "Price", precision=4, icon="mdi:currency-usd", quote_unit=True),
    FeatureSensor("move_sigma", "Move sigma", unit="σ", precision=2, icon="mdi:sigma"),
    FeatureSensor("rsi", "RSI", precision=1, icon="mdi:chart-line"),
    FeatureSensor("realized_vol", "Realized volatility", unit="%", scale=100.0, precision=1),
    FeatureSensor("iv", "Implied volatility", unit="%", scale=100.0, precision=1),
    FeatureSensor("tvl", "TVL", precision=0, icon="mdi:water", quote_unit=True),
)


@dataclass(frozen=True, slots=True)
class DiscoveryPool:
    """A monitored pool as discovery needs it."""

    chain: str
    address: str
    name: str
    kind: str = "uniswap_v3"
    quote_symbol: str | None = None

    def __post_init__(self) -> None:
        if not self.chain or not self.address or not self.name:
            raise ValueError("DiscoveryPool needs chain, address and name")


@dataclass(frozen=True, slots=True)
class DiscoveryLayer:
    name: str
    level: int
    description: str = ""


@dataclass(frozen=True, slots=True)
class DiscoveryMessage:
    """A discovery config: publish ``payload`` as JSON, retained, on ``topic``."""

    component: Component
    topic: str
    payload: Mapping[str, Any]

    def body(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False).encode()


def sanitize_id(text: str) -> str:
    """An id Home Assistant accepts in a discovery topic: ``[a-zA-Z0-9_-]`` only."""
    out = _ID_CHARS.sub("_", text)
    if not out:
        raise ValueError("an id cannot be empty")
    return out


def _entity_id(text: str) -> str:
    # Entity ids are lowercase letters, digits and underscores.
    return _ENTITY_CHARS.sub("_", text.lower())


def _feature_template(sensor: FeatureSensor) -> str:
    value = f"value_json.features.{sensor.feature}"
    expr = value if sensor.scale == 1.0 else f"({value} * {sensor.scale:g})"
    # A degraded pool's payload has no "features"; a feature that is NaN is null. Both
    # render "None", which Home Assistant takes as unknown, instead of a template error.
    return f"{{{{ {expr} if value_json.features is defined and {value} is not none else none }}}}"


LAYER_TEMPLATE = "{{ 'ON' if value_json.state == 'firing' else 'OFF' }}"
AVAILABILITY_TEMPLATE = "{{ value_json.state }}"
LAYER_ATTRIBUTES_TEMPLATE = (
    "{{ {'level': value_json.level, 'since': value_json.since, 'reason': value_json.reason, "
    "'inhibited_by': value_json.inhibited_by, "
    "'last_firing': (value_json.last_firing.time if value_json.last_firing else none), "
    "'last_event': (value_json.last_event.event if value_json.last_event else none)} "
    "| tojson }}"
)


def node_id(topic_prefix: str) -> str:
    """The discovery node id of one alvh instance: its topic prefix, sanitised."""
    return sanitize_id(topic_prefix)


def _device(pool: DiscoveryPool, node: str, version: str) -> dict[str, Any]:
    return {
        "identifiers": [f"{node}_{sanitize_id(pool.chain)}_{pool.address.lower()}"],
        "name": f"{pool.name} ({pool.chain})",
        "manufacturer": MANUFACTURER,
        "model": f"{pool.kind} pool monitor",
        "sw_version": version,
    }


def _availability(topic_prefix: str) -> dict[str, Any]:
    return {
        "availability_topic": f"{topic_prefix}/status",
        "availability_template": AVAILABILITY_TEMPLATE,
        "payload_available": "online",
        "payload_not_available": "offline",
    }


def discovery_messages(
    *,
    topic_prefix: str,
    pools: Sequence[DiscoveryPool],
    layers: Sequence[DiscoveryLayer],
    version: str,
    discovery_prefix: str = "homeassistant",
) -> list[DiscoveryMessage]:
    """Discovery configs for every pool's :data:`FEATURE_SENSORS` and every (pool, layer)
    firing state, in a stable order. Raises ValueError if two entities would share an id."""
    if not discovery_prefix or any(c in discovery_prefix for c in "+#"):
        raise ValueError(f"invalid discovery prefix {discovery_prefix!r}")
    node = node_id(topic_prefix)
    out: list[DiscoveryMessage] = []
    seen: set[str] = set()

    def add(component: Component, object_id: str, payload: dict[str, Any]) -> None:
        if object_id in seen:
            raise ValueError(f"two Home Assistant entities would share the id {object_id!r}")
        seen.add(object_id)
        topic = f"{discovery_prefix}/{component}/{node}/{object_id}/config"
        out.append(DiscoveryMessage(component, topic, payload))

    for pool in pools:
        base = f"{node}_{sanitize_id(pool.chain)}_{pool.address.lower()}"
        device = _device(pool, node, version)
        for sensor in FEATURE_SENSORS:
            object_id = f"{base}_{sensor.feature}"
            payload: dict[str, Any] = {
                "name": sensor.name,
                "unique_id": object_id,
                "default_entity_id": f"sensor.{_entity_id(object_id)}",
                "state_topic": f"{topic_prefix}/pools/{pool.chain}/{pool.address}",
                "value_template": _feature_template(sensor),
                "state_class": "measurement",
                "device": device,
                **_availability(topic_prefix),
            }
            unit = pool.quote_symbol if sensor.quote_unit else sensor.unit
            if unit:
                payload["unit_of_measurement"] = unit
            if sensor.precision is not None:
                payload["suggested_display_precision"] = sensor.precision
            if sensor.icon is not None:
                payload["icon"] = sensor.icon
            add("sensor", object_id, payload)
        for layer in layers:
            object_id = f"{base}_layer_{sanitize_id(layer.name)}"
            name = f"Layer {layer.name} firing"
            payload = {
                "name": name,
                "unique_id": object_id,
                "default_entity_id": f"binary_sensor.{_entity_id(object_id)}",
                "state_topic": f"{topic_prefix}/layers/{pool.chain}/{pool.address}/{layer.name}",
                "value_template": LAYER_TEMPLATE,
                "payload_on": "ON",
                "payload_off": "OFF",
                "device_class": "problem",
                "json_attributes_topic": f"{topic_prefix}/layers/{pool.chain}/{pool.address}/"
                f"{layer.name}",
                "json_attributes_template": LAYER_ATTRIBUTES_TEMPLATE,
                "device": device,
                **_availability(topic_prefix),
            }
            add("binary_sensor", object_id, payload)
    return out


# --- the daemon side -------------------------------------------------------------------


class HomeAssistantDiscovery:
    """Publishes the discovery configs of a running daemon and answers HA's birth."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.discovery_prefix = runtime.mqtt.homeassistant_prefix

    def messages(self) -> list[DiscoveryMessage]:
        """Configs of the pools whose chain is connected (so their quote symbol is known:
        a unit that changed after the first config would upset HA's statistics)."""
        rt = self.runtime
        pools: list[DiscoveryPool] = []
        for cfg_pool, info in zip(rt.pools, rt.pipeline.pools(), strict=True):
            reading = rt.chains.reading(info.pool)
            if reading is None:
                continue
            pools.append(
                DiscoveryPool(
                    chain=cfg_pool.chain,
                    address=cfg_pool.address,
                    name=info.name,
                    kind=cfg_pool.kind,
                    quote_symbol=reading.quote_symbol,
                )
            )
        return discovery_messages(
            topic_prefix=rt.mqtt.topic_prefix,
            pools=pools,
            layers=_layers(rt),
            version=__version__,
            discovery_prefix=self.discovery_prefix,
        )

    def refresh(self) -> None:
        """Retain the current configs (the publisher does not re-send unchanged ones)."""
        for message in self.messages():
            self.runtime.publisher.retain_abs(message.topic, message.body())

    async def tick(self) -> None:
        self.refresh()

    async def on_ha_status(self, message: aiomqtt.Message) -> None:
        """Home Assistant (re)started: send every config again (not retained: the
        retained copies are already on the broker)."""
        raw = message.payload
        text = bytes(raw).decode(errors="replace") if isinstance(raw, bytes | bytearray) else raw
        if text != "online":
            return
        configs = self.messages()
        log.info("home assistant online, re-sending discovery", configs=len(configs))
        for config in configs:
            await self.runtime.publisher.publish_now(config.topic, config.body())


def clear_stale(runtime: Runtime, keep: set[str]) -> None:
    """Delete (empty retained payload) the configs an earlier run may have published that
    are not in ``keep`` (pools or layers removed from the config, or the option turned
    off); remember ``keep`` as what this run may publish."""
    store, publisher = runtime.store, runtime.publisher
    before = store.get(KV_KEY)
    stale = (
        [t for t in before if isinstance(t, str) and t not in keep]
        if isinstance(before, list)
        else []
    )
    for topic in stale:
        publisher.retain_abs(topic, None)
    if stale:
        log.info("home assistant configs deleted", configs=len(stale))
    if before != sorted(keep):
        store.put(KV_KEY, sorted(keep))


def attach(runtime: Runtime) -> HomeAssistantDiscovery | None:
    """Publish discovery when ``mqtt.homeassistant`` is on (else delete what an earlier
    run published). Call once per run, before the publisher runs."""
    if not runtime.mqtt.homeassistant:
        clear_stale(runtime, set())
        return None
    ha = HomeAssistantDiscovery(runtime)
    clear_stale(runtime, {m.topic for m in _all_configured(runtime)})
    ha.refresh()
    runtime.publisher.subscribe(f"{ha.discovery_prefix}/status", ha.on_ha_status)
    runtime.scheduler.add_job(
        ha.tick,
        "interval",
        seconds=REFRESH_SECONDS,
        id="homeassistant",
        replace_existing=True,
    )
    return ha


def _layers(runtime: Runtime) -> list[DiscoveryLayer]:
    return [DiscoveryLayer(x.name, x.level, x.description) for x in runtime.layers]


def _all_configured(runtime: Runtime) -> list[DiscoveryMessage]:
    # Every config the current config file can produce (units do not change topics).
    return discovery_messages(
        topic_prefix=runtime.mqtt.topic_prefix,
        pools=[
            DiscoveryPool(p.chain, p.address, info.name, p.kind)
            for p, info in zip(runtime.pools, runtime.pipeline.pools(), strict=True)
        ],
        layers=_layers(runtime),
        version=__version__,
        discovery_prefix=runtime.mqtt.homeassistant_prefix,
    )
