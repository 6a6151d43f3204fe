"""The Mosquitto plugin (tests/plugins/broker.py) against a real broker.

"Never arrives" is shown without waiting for a timeout: once the message that must not
arrive is acknowledged (PUBACK) or, for a retained message, the SUBACK is in, a sentinel
is published to the same subscriber. Mosquitto queues a message to its subscribers
before it acknowledges it, and sends retained messages right after the SUBACK, so once
the sentinel is there the other message would have been there before it.
"""

from __future__ import annotations

import os
import ssl
import uuid
from pathlib import Path
from typing import Literal

import pytest

from tests.plugins.broker import (
    INSTALL_HINT,
    AclRule,
    Broker,
    BrokerFactory,
    BrokerStartError,
    Client,
    Message,
    MqttConnectError,
    Subscriber,
    acl_file_text,
    find_program,
)

pytestmark = pytest.mark.integration

# Mosquitto 2.0 refuses a wrong or missing password with "Not authorized" (MQTT 5: 0x87;
# paho maps the MQTT 3.1.1 return code 5 to the same reason code).
NOT_AUTHORIZED = 135
NO_MATCHING_SUBSCRIBERS = 16

USERS = {"alvh": "alvh-secret", "ops": "ops-secret", "viewer": "viewer-secret"}
# The ACL of the brief: ops may command, alvh publishes its own topics but not commands,
# viewer (a dashboard) only reads.
ACL = (
    AclRule("alvh/#", "readwrite", user="alvh"),
    AclRule("alvh/cmd/#", "deny", user="alvh"),
    AclRule("alvh/#", "readwrite", user="ops"),
    AclRule("alvh/#", "read", user="viewer"),
)


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


def _topics(messages: list[Message]) -> list[str]:
    return [m.topic for m in messages]


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_plain_publish_subscribe(broker: Broker, prefix: str) -> None:
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    assert broker.ws_port is None
    with Subscriber(broker, f"{prefix}/#") as sub, Client(broker) as pub:
        assert pub.publish(f"{prefix}/a", b'{"n": 1}', qos=1) == 0
        pub.publish(f"{prefix}/b", "two", qos=0)
        messages = sub.wait_for(lambda ms: len(ms) == 2)
    assert [(m.topic, m.qos, m.retain) for m in messages] == [
        (f"{prefix}/a", 1, False),
        (f"{prefix}/b", 0, False),
    ]
    assert messages[0].json() == {"n": 1}
    assert messages[1].text() == "two"


def test_mqtt5_properties_reach_the_subscriber(broker: Broker, prefix: str) -> None:
    with Subscriber(broker, f"{prefix}/#") as sub, Client(broker) as pub:
        pub.publish(
            f"{prefix}/alert",
            b"{}",
            content_type="application/json",
            message_expiry_interval=3600,
        )
        message = sub.wait_for_topic(f"{prefix}/alert")
    assert message.content_type == "application/json"
    # The broker forwards the remaining lifetime, at most what was set.
    assert message.message_expiry_interval is not None
    assert 0 < message.message_expiry_interval <= 3600


def test_retained_message_is_flagged(broker: Broker, prefix: str) -> None:
    with Client(broker) as pub:
        pub.publish(f"{prefix}/status", b"online", retain=True)
        with Subscriber(broker, f"{prefix}/status") as sub:
            message = sub.wait_for_topic(f"{prefix}/status")
            assert message.retain
            pub.publish(f"{prefix}/status", b"offline", retain=True)
            live = sub.wait_for(lambda ms: len(ms) == 2)[1]
    # A message delivered to a subscriber that is already there is not flagged retained.
    assert (live.payload, live.retain) == (b"offline", False)


@pytest.mark.parametrize("protocol", [5, 4])
@pytest.mark.parametrize(
    ("username", "password", "refused"),
    [
        ("alvh", "alvh-secret", False),
        ("alvh", "wrong", True),
        ("nobody", "alvh-secret", True),
        (None, None, True),
    ],
)
def test_password_authentication(
    broker_factory: BrokerFactory,
    protocol: Literal[5, 4],
    username: str | None,
    password: str | None,
    refused: bool,
) -> None:
    broker = broker_factory(allow_anonymous=False, users=USERS)
    if not refused:
        with Client(broker, username=username, password=password, protocol=protocol) as client:
            assert client.connected
        return
    with pytest.raises(MqttConnectError) as caught:
        Client(broker, username=username, password=password, protocol=protocol)
    assert caught.value.reason_code == NOT_AUTHORIZED
    assert "Not authorized" in str(caught.value)


@pytest.mark.parametrize(
    ("user", "topic", "allowed"),
    [
        ("ops", "alvh/cmd/silence", True),
        ("alvh", "alvh/alerts/x", True),
        ("alvh", "alvh/cmd/silence", False),  # deny beats the broader grant
        ("viewer", "alvh/cmd/silence", False),  # read-only
        ("viewer", "alvh/alerts/x", False),
    ],
)
def test_acl_decides_who_may_publish(
    broker_factory: BrokerFactory, user: str, topic: str, allowed: bool
) -> None:
    broker = broker_factory(allow_anonymous=False, users=USERS, acl=ACL)
    sentinel = "alvh/sentinel"
    with (
        Subscriber(broker, "alvh/#", username="ops", password=USERS["ops"]) as sub,
        Client(broker, username=user, password=USERS[user]) as pub,
        Client(broker, username="ops", password=USERS["ops"]) as ops,
    ):
        code = pub.publish(topic, b"x")
        ops.publish(sentinel, b"end")  # viewer may not publish it, so ops does
        received = _topics(sub.wait_for(lambda ms: sentinel in _topics(ms)))
    assert (topic in received) is allowed
    assert (code == 0) is allowed
    if not allowed:
        assert code == NOT_AUTHORIZED


def test_acl_read_rules_filter_deliveries(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(
        allow_anonymous=False,
        users=USERS,
        acl=(*ACL, AclRule("ops/private", "readwrite", user="ops")),
    )
    with (
        # Mosquitto 2.0 grants the subscription and filters at delivery time.
        Subscriber(broker, "#", username="viewer", password=USERS["viewer"]) as sub,
        Client(broker, username="ops", password=USERS["ops"]) as ops,
    ):
        ops.publish("ops/private", b"secret")
        ops.publish("alvh/status", b"online")
        received = _topics(sub.wait_for(lambda ms: "alvh/status" in _topics(ms)))
    assert received == ["alvh/status"]


def test_acl_file_groups_rules_as_mosquitto_reads_them() -> None:
    rules = [
        AclRule("alvh/#", "read", user="viewer"),
        AclRule("public/#", "read"),
        AclRule("clients/%c/#", "readwrite", pattern=True),
        AclRule("alvh/cmd/#", "readwrite", user="ops"),
        AclRule("alvh/cmd/audit", "read", user="viewer"),
    ]
    assert acl_file_text(rules).splitlines() == [
        "topic read public/#",
        "pattern readwrite clients/%c/#",
        "user viewer",
        "topic read alvh/#",
        "topic read alvh/cmd/audit",
        "user ops",
        "topic readwrite alvh/cmd/#",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"topic": ""}, "non-empty"),
        ({"topic": "a b"}, "without spaces"),
        ({"topic": "a", "access": "write-only"}, "access must be"),
        ({"topic": "a", "user": "ops", "pattern": True}, "give no user"),
        ({"topic": "a", "user": "o:ps"}, "username"),
    ],
)
def test_acl_rule_validates_itself(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AclRule(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"allow_anonymous": False}, "no client could connect"),
        ({"require_client_cert": True}, "needs tls=True"),
        ({"autosave_interval": 5}, "needs persistence=True"),
        ({"users": {"a": ""}}, "non-empty"),
        ({"users": {"a b": "x"}}, "username"),
        ({"extra_config": ["a 1\nb 2"]}, "one config line"),
    ],
)
def test_broker_rejects_contradictory_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Broker(**kwargs)  # type: ignore[arg-type]


def test_tls_with_the_generated_ca(broker_factory: BrokerFactory, prefix: str) -> None:
    broker = broker_factory(tls=True)
    assert broker.url == f"mqtts://127.0.0.1:{broker.port}"
    assert broker.ca_cert is not None
    assert broker.ca_cert.read_text().startswith("-----BEGIN CERTIFICATE-----")
    # The broker's own CA (the default), with hostname checking of 127.0.0.1 on.
    with Subscriber(broker, f"{prefix}/#") as sub, Client(broker) as pub:
        pub.publish(f"{prefix}/x", b"over tls")
        assert sub.wait_for_topic(f"{prefix}/x").payload == b"over tls"
    # The system's CAs do not know the throw-away CA.
    with pytest.raises(ssl.SSLCertVerificationError):
        Client(broker, ssl_context=ssl.create_default_context())


def test_tls_client_certificate_required(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(tls=True, require_client_cert=True)
    with Client(broker) as client:  # the default context carries the client certificate
        assert client.connected
    without_cert = broker.client_ssl_context(client_cert=False)
    # TLS 1.3 reports the missing certificate after the handshake: a closed connection.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        Client(broker, ssl_context=without_cert, timeout=10.0)


def test_tls_with_password_and_acl(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(allow_anonymous=False, users=USERS, acl=ACL, tls=True)
    with pytest.raises(MqttConnectError):
        Client(broker, username="alvh", password="wrong")
    with (
        Subscriber(broker, "alvh/#", username="viewer", password=USERS["viewer"]) as sub,
        Client(broker, username="alvh", password=USERS["alvh"]) as daemon,
    ):
        daemon.publish("alvh/status", b"online", retain=True)
        assert sub.wait_for_topic("alvh/status").payload == b"online"


def test_websockets_listener(broker_factory: BrokerFactory, prefix: str) -> None:
    broker = broker_factory(websockets=True)
    assert broker.ws_port is not None
    assert broker.ws_port != broker.port
    assert broker.ws_url == f"ws://127.0.0.1:{broker.ws_port}/mqtt"
    with (
        Subscriber(broker, f"{prefix}/#", transport="websockets") as ws_sub,
        Subscriber(broker, f"{prefix}/#") as tcp_sub,
        Client(broker, transport="websockets") as ws_pub,
        Client(broker) as tcp_pub,
    ):
        tcp_pub.publish(f"{prefix}/from-tcp", b"1")
        ws_pub.publish(f"{prefix}/from-ws", b"2")
        expected = {f"{prefix}/from-tcp", f"{prefix}/from-ws"}
        for sub in (ws_sub, tcp_sub):
            assert set(_topics(sub.wait_for(lambda ms: len(ms) == 2))) == expected


def test_restart_keeps_retained_messages_with_persistence(
    broker_factory: BrokerFactory, prefix: str
) -> None:
    broker = broker_factory(persistence=True)
    port = broker.port
    with Client(broker) as pub:
        assert pub.publish(f"{prefix}/status", b"online", retain=True) == NO_MATCHING_SUBSCRIBERS
    broker.restart()
    assert broker.port == port
    assert broker.persistence_path.is_file()
    with Subscriber(broker, f"{prefix}/status") as sub:
        message = sub.wait_for_topic(f"{prefix}/status")
    assert (message.payload, message.retain) == (b"online", True)


def test_restart_without_persistence_forgets_retained_messages(
    broker_factory: BrokerFactory, prefix: str
) -> None:
    broker = broker_factory(persistence=False)
    with Client(broker) as pub:
        pub.publish(f"{prefix}/status", b"online", retain=True)
    broker.restart()
    with Subscriber(broker, f"{prefix}/#") as sub, Client(broker) as pub:
        # A retained message would be sent right after the SUBACK, before this one.
        pub.publish(f"{prefix}/sentinel", b"end")
        received = _topics(sub.wait_for(lambda ms: f"{prefix}/sentinel" in _topics(ms)))
    assert received == [f"{prefix}/sentinel"]
    assert not broker.persistence_path.exists()


@pytest.mark.parametrize("protocol", [5, 4])
def test_restart_keeps_queued_messages_of_persistent_sessions(
    broker_factory: BrokerFactory, prefix: str, protocol: Literal[5, 4]
) -> None:
    broker = broker_factory(persistence=True)
    topics, client_id = f"{prefix}/alerts/#", f"{prefix}-dashboard"
    # A dashboard with a persistent session goes offline ...
    Subscriber(broker, topics, client_id=client_id, session_expiry=600, protocol=protocol).stop()
    with Client(broker) as pub:
        for n in range(3):
            pub.publish(f"{prefix}/alerts/{n}", str(n))
    broker.restart()
    # ... and comes back after the broker restarted: its queue survived.
    with Subscriber(
        broker, topics, client_id=client_id, session_expiry=600, protocol=protocol
    ) as sub:
        messages = sub.wait_for(lambda ms: len(ms) >= 3)
    assert [m.payload for m in messages] == [b"0", b"1", b"2"]


def test_clients_reconnect_after_a_restart(broker: Broker, prefix: str) -> None:
    with Subscriber(broker, f"{prefix}/#") as sub, Client(broker) as pub:
        connects = sub.connects
        broker.restart()
        sub.wait_connected(after=connects, timeout=15)
        pub.wait_connected(after=connects, timeout=15)
        # A clean session: the subscriber subscribed again on its own.
        pub.publish(f"{prefix}/after", b"1")
        assert sub.wait_for_topic(f"{prefix}/after").payload == b"1"


def test_kill_and_start_again_on_the_same_port(broker: Broker) -> None:
    first_pid, port = broker.pid, broker.port
    assert first_pid is not None
    broker.kill()
    assert not broker.running
    assert _process_gone(first_pid)
    broker.start()
    assert (broker.port, broker.running) == (port, True)
    assert broker.pid != first_pid
    with Client(broker) as client:
        assert client.connected


def test_paused_broker_serves_again_after_resume(broker: Broker, prefix: str) -> None:
    broker.pause()
    assert broker.running  # stopped, not dead
    broker.resume()
    with Subscriber(broker, f"{prefix}/x") as sub, Client(broker) as pub:
        pub.publish(f"{prefix}/x", b"1")
        sub.wait_for_topic(f"{prefix}/x")


def test_close_reaps_the_process_removes_files_and_stops_clients(
    mosquitto_bin: Path,
) -> None:
    broker = Broker(binary=mosquitto_bin, users={"alvh": "pw"}, tls=True, persistence=True)
    broker.start()
    pid, directory = broker.pid, broker.directory
    assert pid is not None
    assert (directory / "passwd").is_file()
    sub = Subscriber(broker, "x", username="alvh", password="pw")
    broker.close()
    assert _process_gone(pid)
    assert not directory.exists()
    assert not sub.connected
    broker.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        broker.start()


def test_start_failure_reports_the_broker_log(mosquitto_bin: Path) -> None:
    broker = Broker(binary=mosquitto_bin, extra_config=["no_such_option 1"])
    with pytest.raises(BrokerStartError, match="no_such_option"):
        broker.start()
    broker.close()


def test_missing_program_names_the_install_command() -> None:
    with pytest.raises(RuntimeError, match="apt-get install -y mosquitto mosquitto-clients"):
        find_program("alvh-no-such-mosquitto", INSTALL_HINT)
