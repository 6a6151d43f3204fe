"""MQTT publishing per the DESIGN.md contract, with aiomqtt.

Guarantees:
- alert events come only from the durable outbox (:mod:`daemon.service.store`), in order,
  and are deleted there only after the broker's PUBACK (QoS >= 1);
- ``{prefix}/status`` is retained: ``online`` after each connect, ``offline`` on a
  clean stop and as the last will;
- retained state topics (layers, pools, silences, discovery) keep only their latest
  value in memory and are all re-published after every reconnect, so a broker that
  lost them (restart without persistence) is repaired;
- reconnects use jittered exponential backoff; a refused login is logged as one
  clear line naming the cause, never with the password;
- MQTT 5 where the broker supports it (content type, message expiry), else 3.1.1; every
  JSON publish, the status and the last will included, carries the content type
  ``application/json`` over MQTT 5.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from daemon.config import MqttConfig
from daemon.service.metrics import Metrics
from daemon.service.store import OutboxItem, Store

log = structlog.get_logger(component="alvh.mqtt")

MessageHandler = Callable[[aiomqtt.Message], Awaitable[None]]

_AUTH_HINTS = {
    4: "bad username or password",
    5: "not authorised",
    134: "bad username or password",
    135: "not authorised",
}


def _refusal(exc: aiomqtt.MqttError) -> str:
    rc = getattr(exc, "rc", None)
    value = getattr(rc, "value", rc)
    if isinstance(value, int) and value in _AUTH_HINTS:
        return _AUTH_HINTS[value]
    return str(exc)


class Publisher:
    """Owns the MQTT connection: outbox drain, retained state, command subscriptions."""

    def __init__(
        self,
        cfg: MqttConfig,
        store: Store,
        metrics: Metrics,
        *,
        status: dict[str, Any],
        window: int = 64,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.metrics = metrics
        self.prefix = cfg.topic_prefix
        self._status = status
        self._window = window
        self._retained: dict[str, tuple[bytes, int]] = {}
        self._dirty: set[str] = set()
        # Retained topics whose current value the broker acknowledged at least once.
        self._acked: set[str] = set()
        self._wake = asyncio.Event()
        self._subscriptions: dict[str, MessageHandler] = {}
        self._on_connect: list[Callable[[], None]] = []
        self.connected = asyncio.Event()
        self.protocol: aiomqtt.ProtocolVersion | None = None
        self.client: aiomqtt.Client | None = None
        self.last_error = ""

    # -- API for the rest of the daemon ------------------------------------------------

    def notify(self) -> None:
        """New rows in the outbox."""
        self._wake.set()

    def retain(
        self, topic_suffix: str, payload: dict[str, Any] | bytes | None, qos: int = 1
    ) -> None:
        """Set the retained value of ``{prefix}/{topic_suffix}`` (latest wins); None clears it."""
        self.retain_abs(f"{self.prefix}/{topic_suffix}", payload, qos)

    def retain_abs(self, topic: str, payload: dict[str, Any] | bytes | None, qos: int = 1) -> None:
        if payload is None:
            body = b""
        elif isinstance(payload, bytes):
            body = payload
        else:
            body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        if self._retained.get(topic, (None, 0))[0] == body:
            return
        self._retained[topic] = (body, qos)
        self._dirty.add(topic)
        self._acked.discard(topic)
        self._wake.set()

    def delivered(self, topic: str) -> bool:
        """Whether the broker acknowledged the current retained value of ``topic`` (QoS 0:
        it was sent)."""
        return topic in self._acked and topic not in self._dirty

    def subscribe(self, topic: str, handler: MessageHandler) -> None:
        """Subscribe (now and after every reconnect)."""
        self._subscriptions[topic] = handler

    def on_connect(self, callback: Callable[[], None]) -> None:
        self._on_connect.append(callback)

    def status_payload(self, state: str) -> bytes:
        return json.dumps({**self._status, "state": state}, separators=(",", ":")).encode()

    # -- connection --------------------------------------------------------------

    def _client(self, protocol: aiomqtt.ProtocolVersion) -> aiomqtt.Client:
        cfg = self.cfg
        tls_context = None
        if cfg.tls:
            tls_context = ssl.create_default_context(
                cafile=str(cfg.ca_file) if cfg.ca_file else None
            )
            if cfg.cert_file is not None and cfg.key_file is not None:
                tls_context.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
            if cfg.tls_insecure:
                tls_context.check_hostname = False
                tls_context.verify_mode = ssl.CERT_NONE
        will_props = None
        if protocol == aiomqtt.ProtocolVersion.V5:
            will_props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
            will_props.ContentType = "application/json"
            will_props.PayloadFormatIndicator = 1
        return aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password(),
            identifier=cfg.client_id,
            protocol=protocol,
            will=aiomqtt.Will(
                f"{self.prefix}/status",
                self.status_payload("offline"),
                qos=1,
                retain=True,
                properties=will_props,
            ),
            keepalive=cfg.keepalive,
            tls_context=tls_context,
            timeout=10,
            clean_session=True if protocol != aiomqtt.ProtocolVersion.V5 else None,
        )

    def _props(self, *, expiry: int | None) -> Properties | None:
        if self.protocol != aiomqtt.ProtocolVersion.V5:
            return None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ContentType = "application/json"
        props.PayloadFormatIndicator = 1
        if expiry:
            props.MessageExpiryInterval = expiry
        return props

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, publish, reconnect with backoff until ``stop`` is set; then publish offline."""
        backoff = 0.5
        protocols = {
            "5": [aiomqtt.ProtocolVersion.V5],
            "3.1.1": [aiomqtt.ProtocolVersion.V311],
            "auto": [aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311],
        }[self.cfg.protocol]
        attempt_protocol = 0
        while not stop.is_set():
            protocol = protocols[attempt_protocol % len(protocols)]
            try:
                client = self._client(protocol)
                async with client:
                    self.client = client
                    self.protocol = protocol
                    backoff = 0.5
                    self.last_error = ""
                    self.metrics.mqtt_connected.set(1)
                    log.info(
                        "mqtt connected",
                        broker=f"{self.cfg.host}:{self.cfg.port}",
                        protocol=protocol.name,
                    )
                    await self._session(client, stop)
                    await client.publish(
                        f"{self.prefix}/status",
                        self.status_payload("offline"),
                        qos=1,
                        retain=True,
                        properties=self._props(expiry=None),
                        timeout=5,
                    )
                    return
            except aiomqtt.MqttError as exc:
                reason = _refusal(exc)
                if "protocol" in reason.lower() and len(protocols) > 1:
                    attempt_protocol += 1
                if reason != self.last_error:
                    log.error(
                        "mqtt connection failed",
                        broker=f"{self.cfg.host}:{self.cfg.port}",
                        error=reason,
                    )
                self.last_error = reason
            finally:
                self.client = None
                self.connected.clear()
                self.metrics.mqtt_connected.set(0)
            if stop.is_set():
                return
            delay = backoff * (0.5 + random.random())
            backoff = min(backoff * 2, float(max(1, self.cfg.reconnect_max)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _session(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        await client.publish(
            f"{self.prefix}/status",
            self.status_payload("online"),
            qos=1,
            retain=True,
            properties=self._props(expiry=None),
        )
        for topic in self._subscriptions:
            await client.subscribe(topic, qos=1)
        self._dirty = set(self._retained)
        for callback in self._on_connect:
            callback()
        self.connected.set()
        reader = asyncio.create_task(self._read(client), name="mqtt-reader")
        try:
            while not stop.is_set():
                if reader.done():
                    reader.result()  # re-raise the reader's MqttError: reconnect
                await self._drain(client)
                await self._flush_retained(client)
                if stop.is_set():
                    break
                self._wake.clear()
                if self.store.depth() or self._dirty:
                    continue
                waiters = [
                    asyncio.ensure_future(self._wake.wait()),
                    asyncio.ensure_future(stop.wait()),
                    reader,
                ]
                _done, pending = await asyncio.wait(
                    waiters, timeout=5.0, return_when=asyncio.FIRST_COMPLETED
                )
                for w in pending:
                    if w is not reader:
                        w.cancel()
            # Last chance to flush what is queued before going offline.
            await self._drain(client)
            await self._flush_retained(client)
        finally:
            reader.cancel()

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            for pattern, handler in self._subscriptions.items():
                if message.topic.matches(pattern):
                    try:
                        await handler(message)
                    except Exception as exc:
                        log.error(
                            "mqtt command handler failed", topic=str(message.topic), error=str(exc)
                        )
                    break

    async def _drain(self, client: aiomqtt.Client) -> None:
        props = self._props(expiry=self.cfg.message_expiry)
        while True:
            items = self.store.pending(self._window)
            if not items:
                self.metrics.outbox_depth.set(0)
                return
            results = await asyncio.gather(
                *(client.publish(i.topic, i.payload, qos=i.qos, properties=props) for i in items),
                return_exceptions=True,
            )
            done: list[OutboxItem] = []
            for item, res in zip(items, results, strict=True):
                if isinstance(res, BaseException):
                    break  # keep order: everything after a failure is resent
                done.append(item)
            self.store.mark_sent(done)
            for item in done:
                self.metrics.alerts_published.labels(layer=item.topic.rsplit("/", 1)[-1]).inc()
            self.metrics.outbox_depth.set(self.store.depth())
            for res in results:
                if isinstance(res, BaseException):
                    if isinstance(res, aiomqtt.MqttError):
                        raise res
                    raise aiomqtt.MqttError(f"publish failed: {res}")

    async def _flush_retained(self, client: aiomqtt.Client) -> None:
        props = self._props(expiry=None)
        while self._dirty:
            topic = self._dirty.pop()
            body, qos = self._retained[topic]
            try:
                await client.publish(
                    topic, body, qos=qos, retain=True, properties=props if body else None
                )
            except BaseException:
                self._dirty.add(topic)
                raise
            if self._retained[topic][0] == body:
                self._acked.add(topic)

    async def publish_now(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        """Publish a non-durable message (command replies); False when offline."""
        client = self.client
        if client is None or not self.connected.is_set():
            return False
        try:
            await client.publish(topic, payload, qos=qos, properties=self._props(expiry=None))
        except aiomqtt.MqttError:
            return False
        return True
