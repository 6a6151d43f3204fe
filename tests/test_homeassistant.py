"""Home Assistant MQTT discovery: the configs follow Home Assistant's documented schema,
topics and ids use only the allowed characters, every state topic is one the daemon
retains, and (end to end) the daemon publishes them, re-sends them when Home Assistant
announces itself, and deletes them when the option is turned off.

The schema tables below are written from Home Assistant's documentation:

- topic format and id characters: https://www.home-assistant.io/integrations/mqtt/#discovery-topic
  (``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config``, ids ``[a-zA-Z0-9_-]``)
- sensor options: https://www.home-assistant.io/integrations/sensor.mqtt/
- binary sensor options: https://www.home-assistant.io/integrations/binary_sensor.mqtt/
- state classes: https://developers.home-assistant.io/docs/core/entity/sensor#available-state-classes
- binary sensor device classes: https://www.home-assistant.io/integrations/binary_sensor/#device-class
- ``object_id`` is deprecated for ``default_entity_id`` since Home Assistant 2025.10
  (the MQTT integration logs "uses the deprecated option object_id ... will stop working
  in Home Assistant Core 2026.4"; ``default_entity_id`` is documented on the pages above).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.service.homeassistant import (
    FEATURE_SENSORS,
    DiscoveryLayer,
    DiscoveryMessage,
    DiscoveryPool,
    discovery_messages,
    sanitize_id,
)
from rules.alert import LayerStatus

# --- the documented schema ---------------------------------------------------------------

TEMPLATE = "template"  # a string holding a Jinja template
ID_RE = re.compile(r"[a-zA-Z0-9_-]+")
TOPIC_RE = re.compile(
    r"(?P<prefix>[^/+#]+)/(?P<component>sensor|binary_sensor)/(?P<node>[^/]+)/(?P<object>[^/]+)/config"
)

# Options shared by sensor and binary sensor: name -> (type(s), required).
COMMON_OPTIONS: dict[str, tuple[object, bool]] = {
    "availability": (list, False),
    "availability_mode": (str, False),
    "availability_template": (TEMPLATE, False),
    "availability_topic": (str, False),
    "default_entity_id": (str, False),
    "device": (dict, False),
    "device_class": ((str, type(None)), False),
    "enabled_by_default": (bool, False),
    "encoding": (str, False),
    "entity_category": (str, False),
    "entity_picture": (str, False),
    "expire_after": (int, False),
    "force_update": (bool, False),
    "icon": (str, False),
    "json_attributes_template": (TEMPLATE, False),
    "json_attributes_topic": (str, False),
    "name": ((str, type(None)), False),
    "object_id": (str, False),  # documented, deprecated: must not be emitted (see below)
    "payload_available": (str, False),
    "payload_not_available": (str, False),
    "qos": (int, False),
    "state_topic": (str, True),
    "unique_id": (str, False),
    "value_template": (TEMPLATE, False),
}
SENSOR_OPTIONS: dict[str, tuple[object, bool]] = {
    **COMMON_OPTIONS,
    "last_reset_value_template": (TEMPLATE, False),
    "options": (list, False),
    "suggested_display_precision": (int, False),
    "state_class": (str, False),
    "unit_of_measurement": ((str, type(None)), False),
}
BINARY_SENSOR_OPTIONS: dict[str, tuple[object, bool]] = {
    **COMMON_OPTIONS,
    "off_delay": (int, False),
    "payload_off": (str, False),
    "payload_on": (str, False),
}
DEVICE_OPTIONS: dict[str, object] = {
    "configuration_url": str,
    "connections": list,
    "hw_version": str,
    "identifiers": (list, str),
    "manufacturer": str,
    "model": str,
    "model_id": str,
    "name": str,
    "serial_number": str,
    "suggested_area": str,
    "sw_version": str,
    "via_device": str,
}
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
BINARY_DEVICE_CLASSES = {
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
    "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
    "tamper", "update", "vibration", "window",
}  # fmt: skip
OPTIONS = {"sensor": SENSOR_OPTIONS, "binary_sensor": BINARY_SENSOR_OPTIONS}


def schema_errors(message: DiscoveryMessage) -> list[str]:
    """Every way ``message`` departs from the documented schema (empty: it conforms)."""
    errors: list[str] = []
    m = TOPIC_RE.fullmatch(message.topic)
    if m is None:
        return [f"topic {message.topic!r} is not <prefix>/<component>/<node_id>/<object_id>/config"]
    if m["component"] != message.component:
        errors.append("topic component differs from the message's component")
    for part in ("node", "object"):
        if not ID_RE.fullmatch(m[part]):
            errors.append(f"{part} id {m[part]!r} has characters outside [a-zA-Z0-9_-]")
    options = OPTIONS[message.component]
    payload = dict(message.payload)
    for key, value in payload.items():
        if key not in options:
            errors.append(f"{key}: not a documented {message.component} option")
            continue
        kind, _required = options[key]
        if kind == TEMPLATE:
            if not (isinstance(value, str) and "{{" in value and "}}" in value):
                errors.append(f"{key}: not a template string")
        elif not isinstance(value, kind):  # type: ignore[arg-type]
            errors.append(f"{key}: {type(value).__name__} where {kind} is documented")
    for key, (_kind, required) in options.items():
        if required and key not in payload:
            errors.append(f"{key}: required")
    if "availability" in payload and "availability_topic" in payload:
        errors.append("availability and availability_topic must not be used together")
    device = payload.get("device")
    if device is not None:
        if "unique_id" not in payload:
            errors.append("device only works when unique_id is set")
        if not device.get("identifiers") and not device.get("connections"):
            errors.append("device needs identifiers or connections")
        for key, value in device.items():
            if key not in DEVICE_OPTIONS:
                errors.append(f"device.{key}: not a documented device option")
            elif not isinstance(value, DEVICE_OPTIONS[key]):  # type: ignore[arg-type]
                errors.append(f"device.{key}: wrong type {type(value).__name__}")
    if "state_class" in payload and payload["state_class"] not in STATE_CLASSES:
        errors.append(f"state_class {payload['state_class']!r} is not a documented state class")
    if message.component == "binary_sensor":
        dc = payload.get("device_class")
        if dc is not None and dc not in BINARY_DEVICE_CLASSES:
            errors.append(f"device_class {dc!r} is not a binary sensor device class")
    entity = payload.get("default_entity_id")
    if entity is not None and not re.fullmatch(rf"{message.component}\.[a-z0-9_]+", entity):
        errors.append(f"default_entity_id {entity!r} is not {message.component}.<lowercase id>")
    return errors


# --- fixtures ----------------------------------------------------------------------------

POOL = DiscoveryPool(
    chain="ethereum",
    address="0x88e6A0c2dDD26FEEb64F039a2c41296FcB3f5640",
    name="WETH/USDC 0.05%",
    quote_symbol="USDC",
)
POOLS = [
    POOL,
    DiscoveryPool("base.mainnet", "0xd0b53D9277642d899DF5C87A3966A349A798F224", "WETH/USDC V2",
                  kind="uniswap_v2"),
]  # fmt: skip
LAYERS = [DiscoveryLayer("L1", 1), DiscoveryLayer("L2", 2), DiscoveryLayer("tvl.crunch", 3)]


def build(**kw: Any) -> list[DiscoveryMessage]:
    args: dict[str, Any] = {
        "topic_prefix": "alvh",
        "pools": POOLS,
        "layers": LAYERS,
        "version": "0.1.0",
    }
    args.update(kw)
    return discovery_messages(**args)


def test_every_config_follows_the_documented_schema() -> None:
    messages = build()
    assert len(messages) == len(POOLS) * (len(FEATURE_SENSORS) + len(LAYERS))
    for message in messages:
        assert schema_errors(message) == [], message.topic


def test_the_schema_check_catches_departures() -> None:
    # The check itself must be able to fail.
    good = build()[0]
    bad = [
        DiscoveryMessage("sensor", good.topic.replace("/alvh/", "/al.vh/"), good.payload),
        DiscoveryMessage("sensor", good.topic, {**good.payload, "stat_topic": "x"}),
        DiscoveryMessage("sensor", good.topic, {**good.payload, "state_class": "gauge"}),
        DiscoveryMessage("sensor", good.topic, {**good.payload, "expire_after": "60"}),
        DiscoveryMessage("sensor", good.topic, {k: v for k, v in good.payload.items()
                                                if k != "state_topic"}),
        DiscoveryMessage("sensor", good.topic, {**good.payload, "availability": [{"topic": "x"}]}),
        DiscoveryMessage("binary_sensor", good.topic, good.payload),
    ]  # fmt: skip
    for message in bad:
        assert schema_errors(message) != []


def test_sensors_read_the_retained_pool_topic() -> None:
    sensors = [m for m in build() if m.component == "sensor" and "0x88e6" in m.topic.lower()]
    assert [s.payload["unique_id"].rsplit("_", 1)[-1] for s in sensors][:1] == ["price"]
    by_feature = {f.feature: s for f, s in zip(FEATURE_SENSORS, sensors, strict=True)}
    assert set(by_feature) == {"price", "move_sigma", "rsi", "realized_vol", "iv", "tvl"}
    for feature, s in by_feature.items():
        p = s.payload
        assert p["state_topic"] == f"alvh/pools/ethereum/{POOL.address}"
        assert f"value_json.features.{feature}" in p["value_template"]
        assert "value_json.features is defined" in p["value_template"]  # degraded pools
        assert p["state_class"] == "measurement"
        assert p["device"]["manufacturer"] == "alvh"
        assert p["device"]["identifiers"] == [f"alvh_ethereum_{POOL.address.lower()}"]
        assert p["device"]["name"] == "WETH/USDC 0.05% (ethereum)"
        assert "object_id" not in p  # deprecated since HA 2025.10
    assert by_feature["price"].payload["unit_of_measurement"] == "USDC"
    assert by_feature["tvl"].payload["unit_of_measurement"] == "USDC"
    assert by_feature["realized_vol"].payload["unit_of_measurement"] == "%"
    assert "* 100" in by_feature["iv"].payload["value_template"]
    assert "unit_of_measurement" not in by_feature["rsi"].payload
    # no quote symbol known: no unit rather than a wrong one
    v2_price = next(m for m in build() if m.topic.endswith("_price/config") and "base" in m.topic)
    assert "unit_of_measurement" not in v2_price.payload


def test_layer_binary_sensors_are_on_exactly_when_firing() -> None:
    binaries = [m for m in build() if m.component == "binary_sensor"]
    assert len(binaries) == len(POOLS) * len(LAYERS)
    for b in binaries:
        p = b.payload
        assert p["device_class"] == "problem"
        assert (p["payload_on"], p["payload_off"]) == ("ON", "OFF")
        assert p["value_template"] == "{{ 'ON' if value_json.state == 'firing' else 'OFF' }}"
        assert p["json_attributes_topic"] == p["state_topic"]
    first = binaries[0].payload
    status = LayerStatus("ethereum", POOL.address, "L1", 1, "firing", 0, 0, {})
    assert first["state_topic"] == f"alvh/{status.topic_suffix}"
    # a layer name with a dot gives a valid object id
    crunch = [b for b in binaries if b.payload["state_topic"].endswith("/tvl.crunch")]
    assert len(crunch) == 2
    assert all(b.topic.endswith("_layer_tvl_crunch/config") for b in crunch)


def test_availability_follows_the_daemon_status() -> None:
    for m in build(topic_prefix="ops/alvh"):
        p = m.payload
        assert p["availability_topic"] == "ops/alvh/status"
        assert p["availability_template"] == "{{ value_json.state }}"
        assert (p["payload_available"], p["payload_not_available"]) == ("online", "offline")
        assert m.topic.split("/")[2] == "ops_alvh"  # node id sanitised from the prefix


def test_discovery_prefix_is_configurable() -> None:
    assert all(m.topic.startswith("ha-test/") for m in build(discovery_prefix="ha-test"))
    with pytest.raises(ValueError, match="discovery prefix"):
        build(discovery_prefix="home/#")


def test_ids_are_unique_and_collisions_are_refused() -> None:
    messages = build()
    assert len({m.payload["unique_id"] for m in messages}) == len(messages)
    assert len({m.topic for m in messages}) == len(messages)
    with pytest.raises(ValueError, match="share the id"):
        build(layers=[DiscoveryLayer("a.b", 1), DiscoveryLayer("a_b", 2)])


def test_bodies_are_json() -> None:
    for m in build():
        assert json.loads(m.body()) == m.payload


@settings(max_examples=100, deadline=None)
@given(
    chain=st.from_regex(r"[A-Za-z0-9_.-]{1,16}", fullmatch=True),
    layer=st.from_regex(r"[A-Za-z0-9_.-]{1,16}", fullmatch=True),
    prefix=st.from_regex(r"[a-z][a-z0-9/_-]{0,10}[a-z0-9]", fullmatch=True),
)
def test_any_configured_names_give_valid_topics(chain: str, layer: str, prefix: str) -> None:
    pool = DiscoveryPool(chain, POOL.address, "x")
    messages = discovery_messages(
        topic_prefix=prefix, pools=[pool], layers=[DiscoveryLayer(layer, 1)], version="0"
    )
    for m in messages:
        assert schema_errors(m) == []


@pytest.mark.parametrize(
    ("text", "expected"), [("alvh", "alvh"), ("a.b/c d", "a_b_c_d"), ("L-1_x", "L-1_x")]
)
def test_sanitize_id(text: str, expected: str) -> None:
    assert sanitize_id(text) == expected


# --- end to end --------------------------------------------------------------------------


def resolve(payload: Any, template: str) -> list[str]:
    """The ``value_json`` paths of a template that do not exist in ``payload``."""
    missing = []
    for path in re.findall(r"value_json((?:\.[a-z_]+)+)", template):
        node = payload
        for key in path.strip(".").split("."):
            if not isinstance(node, dict) or key not in node:
                missing.append(path)
                break
            node = node[key]
    return missing


@pytest.mark.integration
def test_daemon_publishes_discovery_and_answers_home_assistant(
    tmp_path: Path, devchain: Any, broker: Any
) -> None:
    from tests.daemon_proc import DaemonProcess
    from tests.plugins.broker import Client, Subscriber
    from tests.scenario import config_text, drive, next_timestamp, online, random_walk

    cfg = tmp_path / "alvh.toml"
    mqtt = f'url = "{broker.url}"\nhomeassistant = true'
    cfg.write_text(config_text(tmp_path, devchain, broker, mqtt=mqtt))
    address = devchain.market.v3_500.address
    sub = Subscriber(broker, ["alvh/#", "homeassistant/#"])
    expected = len(FEATURE_SENSORS) + 2  # six sensors, layers L1 and L2
    with DaemonProcess(cfg) as daemon:
        sub.wait_for(online, 30)

        def configs(retained: bool) -> dict[str, dict[str, Any]]:
            return {
                m.topic: m.json()
                for m in sub.messages
                if m.topic.startswith("homeassistant/") and m.payload and m.retain == retained
            }

        drive(devchain, random_walk(devchain.market.eth_price, 3, 0.001, seed=3),
              next_timestamp(devchain))  # fmt: skip
        sub.wait_for(lambda ms: len(configs(False)) >= expected, 40)
        live = configs(False)
        for topic, payload in live.items():
            component = topic.split("/")[1]
            message = DiscoveryMessage(component, topic, payload)  # type: ignore[arg-type]
            assert schema_errors(message) == [], topic
        price = live[f"homeassistant/sensor/alvh/alvh_devchain_{address.lower()}_price/config"]
        assert price["unit_of_measurement"] == "USDC"  # the quote token read on chain
        # the state topics exist, and the templates' paths resolve on the real payloads
        pool_state = sub.wait_for_topic(f"alvh/pools/devchain/{address}", 20).json()
        layer_state = sub.wait_for_topic(f"alvh/layers/devchain/{address}/L1", 20).json()
        status = sub.wait_for_topic("alvh/status").json()
        for payload in live.values():
            state = pool_state if "/pools/" in payload["state_topic"] else layer_state
            assert resolve(state, payload["value_template"]) == []
            assert resolve(status, payload["availability_template"]) == []
        assert status["state"] == price["payload_available"]

        # Home Assistant restarts: it announces itself, the configs come again.
        before = len([m for m in sub.messages if m.topic.startswith("homeassistant/sensor/")])
        ha = Client(broker)
        ha.publish("homeassistant/status", "online")
        sub.wait_for(
            lambda ms: (
                len([m for m in ms if m.topic.startswith("homeassistant/sensor/")])
                >= before + len(FEATURE_SENSORS)
            ),
            20,
        )
        ha.stop()
        assert daemon.stop() == 0
    sub.stop()

    # Retained: a late subscriber (Home Assistant starting later) gets every config.
    late = Subscriber(broker, ["homeassistant/#"])
    late.wait_for(lambda ms: len([m for m in ms if m.retain and m.payload]) >= expected, 10)
    late.stop()

    # The option turned off: the configs are deleted (empty retained payloads).
    cfg.write_text(config_text(tmp_path, devchain, broker))
    gone = Subscriber(broker, ["homeassistant/#"])
    with DaemonProcess(cfg) as daemon:
        gone.wait_for(
            lambda ms: len([m for m in ms if not m.payload]) >= expected,
            30,
        )
        assert daemon.stop() == 0
    gone.stop()
    # Retained messages reach a new subscriber before anything published after its SUBACK.
    final = Subscriber(broker, ["homeassistant/#", "test/marker"])
    marker = Client(broker)
    marker.publish("test/marker", "end")
    final.wait_for_topic("test/marker", 10)
    marker.stop()
    assert [m.topic for m in final.messages if m.topic.startswith("homeassistant/")] == []
    final.stop()
