"""Silences and acknowledgements: command validation (a table), matching, the alert
filter (silenced events withheld, expiry restores a still-firing layer), acks on repeats,
state round trips; and, end to end, a silenced layer produces no alert on MQTT and its
firing comes through when the silence expires, while a malformed command changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.service.silences import (
    MAX_DURATION,
    AckCommand,
    CommandError,
    Matcher,
    Silence,
    SilenceBook,
    SilenceCommand,
    check_regex,
    parse_command,
)
from rules.alert import Alert, LayerStatus, alert_id

NOW = 1_800_000_000
POOL = "0x88e6A0c2dDD26FEEb64F039a2c41296FcB3f5640"
OTHER = "0x8ad599c3A0ff1De082011EFDDc58f1908eb6e6D8"


def cmd(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def alert(
    layer: str = "L2",
    event: str = "firing",
    *,
    pool: str = POOL,
    chain: str = "ethereum",
    since: int = NOW - 600,
    time: int = NOW - 60,
    repeat: bool = False,
    retracts: str | None = None,
) -> Alert:
    ident = alert_id(
        chain_id=1,
        pool=pool,
        layer=layer,
        event=event,
        since=since,
        time=time,
        block=time // 12,
        block_hash="0x" + "ab" * 32,
    )
    return Alert(
        id=ident,
        event=event,  # type: ignore[arg-type]
        chain=chain,
        chain_id=1,
        pool=pool,
        pool_name="ETH/USDC 0.05%",
        layer=layer,
        level=int(layer[1:]),
        block=time // 12,
        block_hash="0x" + "ab" * 32,
        time=time,
        since=since,
        reason="test",
        values={"price": 1800.0},
        repeat=repeat,
        retracts=retracts,
    )


def status(layer: str, state: str, since: int | None, *, pool: str = POOL) -> LayerStatus:
    return LayerStatus(
        chain="ethereum",
        pool=pool,
        layer=layer,
        level=int(layer[1:]),
        state=state,  # type: ignore[arg-type]
        since=since,
        time=since or NOW,
        values={},
    )


def silenced_book(**matchers: Any) -> tuple[SilenceBook, str]:
    book = SilenceBook()
    out = book.handle(
        "silence", cmd(matchers=matchers, duration="2h", author="ops", comment="upgrade"), NOW
    )
    assert out.reply["ok"], out.reply
    return book, str(out.reply["silence"]["id"])


# --- validation table --------------------------------------------------------------------

OMIT = object()


def sil(**fields: Any) -> bytes:
    """A silence command: a valid one, with ``fields`` changed (``OMIT`` drops a key)."""
    body: dict[str, Any] = {"matchers": {"layer": "L1"}, "duration": "2h", "author": "x"}
    body.update(fields)
    return cmd(**{k: v for k, v in body.items() if v is not OMIT})


def rx(pattern: str) -> bytes:
    return sil(matchers={"layer": {"regex": pattern}})


BAD_COMMANDS: list[tuple[str, bytes, list[str]]] = [
    ("silence", b"not json", ["payload is not JSON"]),
    ("silence", b"\xff\xfe", ["payload is not UTF-8"]),
    ("silence", b"[1, 2]", ["payload must be a JSON object"]),
    ("silence", b"x" * 20_000, ["payload larger than"]),
    ("silence", sil(author=OMIT), ["author: required"]),
    ("silence", sil(author="  "), ["author: must not be empty"]),
    ("silence", sil(author=7), ["author: must be a string"]),
    ("silence", sil(author="a\nb"), ["author: control characters"]),
    ("silence", sil(matchers={"token": "WETH"}), ["matchers.token: unknown matcher"]),
    ("silence", sil(matchers={}), ["matchers: give at least one"]),
    ("silence", sil(matchers=["layer", "L1"]), ["matchers: must be an object"]),
    ("silence", sil(matchers={"layer": 1}), ["matchers.layer: must be a string"]),
    ("silence", sil(matchers={"layer": ""}), ["matchers.layer: a matcher value"]),
    ("silence", sil(matchers={"layer": {"re": "L1"}}), ["matchers.layer: an object matcher"]),
    ("silence", sil(matchers=OMIT), ["matchers: required"]),
    ("silence", sil(duration=OMIT), ["duration: required"]),
    ("silence", sil(duration="2 hours"), ["duration: invalid duration"]),
    ("silence", sil(duration="0s"), ["duration: must be positive"]),
    ("silence", sil(duration="31d"), ["duration: at most 30d"]),
    ("silence", sil(duration=True), ["duration: must be a string"]),
    ("silence", rx("(a+)+b"), ["matchers.layer.regex: a quantifier after a group"]),
    ("silence", rx("(?i)l1"), ["group extensions"]),
    ("silence", rx("L[12"), ["invalid regex"]),
    ("silence", rx("L{2}"), ["outside the safe subset"]),
    ("silence", rx("L" * 65), ["longer than 64"]),
    ("silence", rx("a*b*c*d*e*"), ["more than 4 quantifiers"]),
    ("silence", rx("(L)\\1"), ["escapes other than"]),
    ("silence", sil(ttl=3), ["ttl: unknown key"]),
    ("silence", cmd(action="delete", id="0" * 16, author="x"), ["action: must be 'create'"]),
    ("silence", cmd(action="expire", author="x"), ["id: required"]),
    ("silence", cmd(action="expire", id="xyz", author="x"), ["id: required"]),
    (
        "silence",
        cmd(action="expire", id="0" * 16, author="x", duration="1h"),
        ["duration: unknown"],
    ),
    ("silence", sil(request_id=[1]), ["request_id: must be"]),
    ("silence", sil(comment="c" * 1025), ["comment: longer than 1024"]),
    ("ack", cmd(author="x"), ["alert_id, matchers: give exactly one"]),
    ("ack", cmd(author="x", alert_id="a" * 32, matchers={"layer": "L1"}), ["give exactly one"]),
    ("ack", cmd(author="x", alert_id="not-an-id"), ["alert_id: must be an alert's id"]),
    ("ack", cmd(author="x", matchers={"level": "1"}), ["matchers.level: unknown matcher"]),
    ("ack", cmd(alert_id="a" * 32), ["author: required"]),
    ("ack", cmd(author="x", alert_id="a" * 32, duration="1h"), ["duration: unknown key for ack"]),
]


@pytest.mark.parametrize(("kind", "payload", "expected"), BAD_COMMANDS)
def test_invalid_commands_are_refused_with_every_reason(
    kind: str, payload: bytes, expected: list[str]
) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(kind, payload)  # type: ignore[arg-type]
    text = "\n".join(info.value.errors)
    for needle in expected:
        assert needle in text, text


def test_all_problems_are_reported_at_once_and_request_id_is_echoed() -> None:
    payload = cmd(
        matchers={"token": "WETH", "layer": {"regex": "(a+)+"}},
        duration="forever",
        request_id="r-42",
    )
    book = SilenceBook()
    reply = book.handle("silence", payload, NOW).reply
    assert reply["ok"] is False
    assert reply["request_id"] == "r-42"
    assert reply["command"] == "silence"
    errors = reply["errors"]
    assert any(e.startswith("author:") for e in errors)
    assert any(e.startswith("duration:") for e in errors)
    assert any(e.startswith("matchers.token:") for e in errors)
    assert any(e.startswith("matchers.layer.regex:") for e in errors)


GOOD_COMMANDS: list[tuple[str, bytes, SilenceCommand | AckCommand]] = [
    (
        "silence",
        cmd(matchers={"layer": "L1"}, duration="2h", author="ops"),
        SilenceCommand("create", "ops", matchers=(Matcher("layer", "L1"),), duration=7200),
    ),
    (
        "silence",
        cmd(
            matchers={"chain": "ethereum", "pool": POOL.lower(), "layer": {"regex": "L[12]"}},
            duration=600,
            author="ops",
            comment="rebalance",
            request_id=7,
        ),
        SilenceCommand(
            "create",
            "ops",
            "rebalance",
            matchers=(
                Matcher("chain", "ethereum"),
                Matcher("pool", POOL.lower()),
                Matcher("layer", "L[12]", regex=True),
            ),
            duration=600,
            request_id=7,
        ),
    ),
    (
        "silence",
        cmd(action="expire", id="0123456789abcdef", author="ops"),
        SilenceCommand("expire", "ops", silence_id="0123456789abcdef"),
    ),
    (
        "ack",
        cmd(alert_id="ab" * 16, author="ops", comment="on it"),
        AckCommand("create", "ops", "on it", alert_id="ab" * 16),
    ),
    (
        "ack",
        cmd(matchers={"layer": "L3"}, author="ops"),
        AckCommand("create", "ops", matchers=(Matcher("layer", "L3"),)),
    ),
]


@pytest.mark.parametrize(("kind", "payload", "expected"), GOOD_COMMANDS)
def test_valid_commands_parse(kind: str, payload: bytes, expected: object) -> None:
    assert parse_command(kind, payload) == expected  # type: ignore[arg-type]


def test_longest_duration_is_accepted() -> None:
    command = parse_command(
        "silence", cmd(matchers={"layer": "L1"}, duration=MAX_DURATION, author="x")
    )
    assert isinstance(command, SilenceCommand)
    assert command.duration == MAX_DURATION


@pytest.mark.parametrize(
    ("pattern", "ok"),
    [
        ("L[12]", True),
        ("L1|L2", True),
        ("0x88e6.*", True),
        ("eth\\w+", True),
        ("^arb.*$", True),
        ("(L1|L2)", True),
        ("(L1|L2)?", False),
        ("(a*)*", False),
        ("a{1,9}", False),
        ("a(?=b)", False),
        ("", False),
    ],
)
def test_regex_subset(pattern: str, ok: bool) -> None:
    assert (check_regex(pattern) is None) is ok


# --- matching ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matcher", "label", "expected"),
    [
        (Matcher("layer", "L1"), "L1", True),
        (Matcher("layer", "L1"), "l1", False),
        (Matcher("layer", "L1"), "L12", False),
        (Matcher("layer", "L[12]", regex=True), "L2", True),
        (Matcher("layer", "L[12]", regex=True), "L3", False),
        (Matcher("layer", "L", regex=True), "L1", False),  # regexes match the whole label
        (Matcher("pool", POOL.lower()), POOL, True),  # addresses ignore case
        (Matcher("pool", "0x88E6.*", regex=True), POOL, True),
        (Matcher("chain", "ethereum|arbitrum", regex=True), "arbitrum", True),
        (Matcher("chain", "Ethereum"), "ethereum", False),
    ],
)
def test_matchers(matcher: Matcher, label: str, expected: bool) -> None:
    assert matcher.matches(label) is expected


def test_a_silence_needs_all_its_matchers_and_an_active_window() -> None:
    s = Silence(
        "0" * 16,
        (Matcher("chain", "ethereum"), Matcher("layer", "L[12]", regex=True)),
        starts_at=NOW,
        ends_at=NOW + 60,
        author="ops",
    )
    assert s.matches("ethereum", POOL, "L1")
    assert not s.matches("arbitrum", POOL, "L1")
    assert not s.matches("ethereum", POOL, "L3")
    assert s.active(NOW)
    assert s.active(NOW + 59)
    assert not s.active(NOW - 1)
    assert not s.active(NOW + 60)
    with pytest.raises(ValueError, match="at least one matcher"):
        Silence("1" * 16, (), starts_at=NOW, ends_at=NOW + 1, author="ops")


labels = st.text(alphabet="abcL0123456789_.-", min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(chain=labels, layer=labels, other=labels)
def test_exact_silence_matches_only_its_labels(chain: str, layer: str, other: str) -> None:
    book = SilenceBook()
    reply = book.handle(
        "silence",
        cmd(matchers={"chain": chain, "layer": layer}, duration="1h", author="ops"),
        NOW,
    ).reply
    assert reply["ok"]
    assert book.is_silenced(chain, POOL, layer, NOW) is not None
    assert (book.is_silenced(chain, POOL, other, NOW) is not None) is (other == layer)
    assert book.is_silenced(chain, POOL, layer, NOW + 3600) is None


# --- the alert filter ----------------------------------------------------------------------


def test_silenced_layer_is_withheld_and_others_pass() -> None:
    book, sid = silenced_book(layer="L2")
    l1, l2 = alert("L1"), alert("L2")
    result = book.filter([l1, l2], NOW)
    assert result.publish == (l1,)
    assert [w.alert for w in result.withheld] == [l2]
    assert result.withheld[0].why == "silenced"
    assert result.withheld[0].by == sid
    assert "ops" in result.withheld[0].note
    assert result.released == ()


def test_expiry_restores_a_layer_that_still_fires() -> None:
    book, _ = silenced_book(layer="L2")
    fired = alert("L2")
    book.filter([fired], NOW)
    book.observe_layers([status("L2", "firing", fired.since)])
    assert book.expire(NOW + 3600) == []  # still silenced: nothing yet
    released = book.expire(NOW + 7200)  # the 2h silence ended
    assert [h.id for h in released] == [fired.id]
    assert json.loads(released[0].payload) == fired.to_payload()
    assert released[0].topic_suffix == fired.topic_suffix
    assert book.expire(NOW + 7300) == []  # released once
    # and new events of that layer are published again
    later = alert("L2", "resolved", time=NOW + 7400)
    assert book.filter([later], NOW + 7400).publish == (later,)


def test_filter_releases_before_new_events() -> None:
    book, _ = silenced_book(layer="L2")
    fired = alert("L2")
    book.filter([fired], NOW)
    nxt = alert("L1", time=NOW + 7250)
    result = book.filter([nxt], NOW + 7250)
    assert [h.id for h in result.released] == [fired.id]
    assert result.publish == (nxt,)


def test_a_layer_resolved_inside_the_silence_releases_nothing() -> None:
    book, _ = silenced_book(layer="L2")
    fired = alert("L2")
    resolved = alert("L2", "resolved", time=NOW + 60)
    book.filter([fired], NOW)
    result = book.filter([resolved], NOW + 60)
    assert result.publish == ()
    assert [w.alert.event for w in result.withheld] == ["resolved"]
    book.observe_layers([status("L2", "inactive", None)])
    assert book.expire(NOW + 7200) == []


def test_expire_command_restores_at_once() -> None:
    book, sid = silenced_book(pool=POOL.lower())
    fired = alert("L3")
    book.filter([fired], NOW)
    out = book.handle("silence", cmd(action="expire", id=sid, author="ops"), NOW + 10)
    assert out.reply["ok"]
    assert out.reply["silence"]["id"] == sid
    assert [h.id for h in book.expire(NOW + 10)] == [fired.id]


def test_overlapping_silences_hold_until_the_last_ends() -> None:
    book, _ = silenced_book(layer="L2")
    book.handle("silence", cmd(matchers={"pool": POOL}, duration="4h", author="b"), NOW)
    fired = alert("L2")
    book.filter([fired], NOW)
    assert book.is_silenced("ethereum", POOL, "L2", NOW).ends_at == NOW + 4 * 3600  # type: ignore[union-attr]
    assert book.expire(NOW + 7200) == []
    assert [h.id for h in book.expire(NOW + 4 * 3600)] == [fired.id]


def test_retraction_of_a_withheld_firing_is_withheld_too() -> None:
    book, sid = silenced_book(layer="L2")
    fired = alert("L2")
    book.filter([fired], NOW)
    book.handle("silence", cmd(action="expire", id=sid, author="ops"), NOW + 1)
    # the reorg is processed in the same filter call that would release the firing
    retraction = alert("L2", "retracted", time=NOW - 60, retracts=fired.id)
    book2 = SilenceBook.from_state(book.to_state())
    result = book2.filter([retraction], NOW + 1)
    assert [h.id for h in result.released] == [fired.id]
    assert result.publish == (retraction,)
    # while the silence holds, the retraction of a withheld firing is withheld as well
    book3, _ = silenced_book(layer="L2")
    book3.filter([fired], NOW)
    out = book3.filter([retraction], NOW + 2)
    assert out.publish == ()
    assert book3.held == {}


# --- acknowledgements -------------------------------------------------------------------


def test_ack_by_alert_id_withholds_repeats_until_resolved() -> None:
    book = SilenceBook()
    fired = alert("L1")
    assert book.filter([fired], NOW).publish == (fired,)
    out = book.handle("ack", cmd(alert_id=fired.id, author="ops", comment="hedged"), NOW)
    assert out.reply["ok"], out.reply
    [ack] = out.reply["acks"]
    assert ack["layer"] == "L1"
    assert ack["alert_id"] == fired.id
    repeat = alert("L1", time=NOW + 3600, repeat=True)
    result = book.filter([repeat], NOW + 10)
    assert result.publish == ()
    assert result.withheld[0].why == "acknowledged"
    resolved = alert("L1", "resolved", time=NOW + 4000)
    assert book.filter([resolved], NOW + 20).publish == (resolved,)
    assert book.acks == {}
    # a new episode is not acknowledged
    again = alert("L1", since=NOW + 5000, time=NOW + 5000)
    rep2 = alert("L1", since=NOW + 5000, time=NOW + 8600, repeat=True)
    assert book.filter([again, rep2], NOW + 30).publish == (again, rep2)


def test_ack_by_matchers_uses_layer_states_and_must_match_something() -> None:
    book = SilenceBook()
    book.observe_layers(
        [status("L1", "firing", NOW - 100), status("L1", "firing", NOW - 50, pool=OTHER)]
    )
    none = book.handle("ack", cmd(matchers={"layer": "L2"}, author="ops"), NOW)
    assert none.reply == {
        "ok": False,
        "command": "ack",
        "request_id": None,
        "errors": ["matchers: no layer firing now matches"],
    }
    out = book.handle("ack", cmd(matchers={"layer": "L1"}, author="ops"), NOW)
    assert len(out.reply["acks"]) == 2
    assert book.is_acked("ethereum", OTHER, "L1", NOW - 50) is not None
    # the layer stops firing: the ack ends with it
    book.observe_layers([status("L1", "inactive", None, pool=OTHER)])
    assert book.is_acked("ethereum", OTHER, "L1", NOW - 50) is None
    assert len(book.acks) == 1


def test_acked_firing_and_resolved_are_still_published() -> None:
    book = SilenceBook()
    book.observe_layers([status("L1", "firing", NOW - 600)])
    book.handle("ack", cmd(matchers={"layer": "L1"}, author="ops"), NOW)
    uninhibited = alert("L1", since=NOW - 600)  # not a repeat: published
    assert book.filter([uninhibited], NOW).publish == (uninhibited,)


def test_unacknowledge() -> None:
    book = SilenceBook()
    book.observe_layers([status("L1", "firing", NOW - 600)])
    ack_id = book.handle("ack", cmd(matchers={"layer": "L1"}, author="ops"), NOW).reply["acks"][0][
        "id"
    ]
    assert book.handle("ack", cmd(action="expire", id=ack_id, author="ops"), NOW).reply["ok"]
    assert book.acks == {}
    gone = book.handle("ack", cmd(action="expire", id=ack_id, author="ops"), NOW).reply
    assert gone["ok"] is False


# --- nothing changes on a bad command ---------------------------------------------------


def busy_book() -> SilenceBook:
    book, _ = silenced_book(layer="L2")
    book.filter([alert("L2"), alert("L1")], NOW)
    book.observe_layers([status("L1", "firing", NOW - 600), status("L2", "firing", NOW - 600)])
    book.handle("ack", cmd(matchers={"layer": "L1"}, author="ops"), NOW)
    return book


@pytest.mark.parametrize(("kind", "payload", "_expected"), BAD_COMMANDS)
def test_a_malformed_command_changes_nothing(kind: str, payload: bytes, _expected: object) -> None:
    book = busy_book()
    before = json.dumps(book.to_state(), sort_keys=True)
    out = book.handle(kind, payload, NOW + 5)  # type: ignore[arg-type]
    assert out.reply["ok"] is False
    assert out.changed is False
    assert json.dumps(book.to_state(), sort_keys=True) == before


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("silence", cmd(action="expire", id="0" * 16, author="ops")),  # no such silence
        ("ack", cmd(alert_id="cd" * 16, author="ops")),  # not a firing alert
        ("ack", cmd(matchers={"chain": "arbitrum"}, author="ops")),  # nothing fires there
    ],
)
def test_a_command_refused_for_its_meaning_changes_nothing(kind: str, payload: bytes) -> None:
    book = busy_book()
    before = json.dumps(book.to_state(), sort_keys=True)
    assert book.handle(kind, payload, NOW + 5).reply["ok"] is False  # type: ignore[arg-type]
    assert json.dumps(book.to_state(), sort_keys=True) == before


@settings(max_examples=300, deadline=None)
@given(
    junk=st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["matchers", "duration", "author", "id", "action", "x", "alert_id"]),
            st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.integers())),
        ).map(lambda d: json.dumps(d).encode()),
    ),
    kind=st.sampled_from(["silence", "ack"]),
)
def test_fuzzed_commands_never_raise_and_change_nothing_unless_ok(junk: bytes, kind: str) -> None:
    book = busy_book()
    before = json.dumps(book.to_state(), sort_keys=True)
    out = book.handle(kind, junk, NOW + 5)  # type: ignore[arg-type]
    if not out.reply["ok"]:
        assert json.dumps(book.to_state(), sort_keys=True) == before


def test_too_many_silences_is_refused() -> None:
    book = SilenceBook(max_silences=2)
    for layer in ("L1", "L2"):
        book.handle("silence", cmd(matchers={"layer": layer}, duration="1h", author="x"), NOW)
    third = book.handle("silence", cmd(matchers={"layer": "L3"}, duration="1h", author="x"), NOW)
    assert third.reply["errors"] == ["too many active silences (at most 2)"]
    # ended silences do not count
    later = book.handle(
        "silence", cmd(matchers={"layer": "L3"}, duration="1h", author="x"), NOW + 3600
    )
    assert later.reply["ok"]
    assert len(book.silences) == 1


# --- state and the retained payload -------------------------------------------------------


def test_state_round_trips_through_json() -> None:
    book = busy_book()
    state = json.loads(json.dumps(book.to_state()))
    again = SilenceBook.from_state(state)
    assert again.to_state() == book.to_state()
    assert again.is_silenced("ethereum", POOL, "L2", NOW) is not None
    with pytest.raises(ValueError, match="version 1"):
        SilenceBook.from_state({"version": 99})
    with pytest.raises(ValueError, match="malformed"):
        SilenceBook.from_state({"version": 1, "serial": 0})


def test_retained_payload_lists_active_silences_and_acks() -> None:
    book = busy_book()
    payload = book.retained_payload(NOW)
    [silence] = payload["silences"]
    assert silence["matchers"] == {"layer": "L2"}
    assert silence["author"] == "ops"
    assert silence["comment"] == "upgrade"
    assert silence["starts_at"] == "2027-01-15T08:00:00Z"
    assert silence["ends_at"] == "2027-01-15T10:00:00Z"
    [ack] = payload["acks"]
    assert ack["layer"] == "L1"
    assert book.retained_payload(NOW) == payload  # no clock inside: same book, same payload
    assert book.retained_payload(NOW + 7200)["silences"] == []


def test_ids_are_deterministic() -> None:
    a, sid_a = silenced_book(layer="L2")
    b, sid_b = silenced_book(layer="L2")
    assert sid_a == sid_b
    second = a.handle("silence", cmd(matchers={"layer": "L2"}, duration="2h", author="ops"), NOW)
    assert second.reply["silence"]["id"] != sid_a
    del b


# --- end to end: daemon + anvil + mosquitto ------------------------------------------------


@pytest.mark.integration
def test_silenced_layer_publishes_nothing_until_the_silence_expires(
    tmp_path: Path, devchain: Any, broker: Any
) -> None:
    from tests.daemon_proc import DaemonProcess
    from tests.plugins.broker import Client, Subscriber
    from tests.scenario import alerts, drive, next_timestamp, online, random_walk, write_config

    cfg = write_config(tmp_path, devchain, broker)
    t = next_timestamp(devchain)
    sub = Subscriber(broker, ["alvh/#"])
    ops = Client(broker)
    with DaemonProcess(cfg) as daemon:
        sub.wait_for(online, 30)
        sub.wait_for(lambda ms: any(m.topic == "alvh/silences" for m in ms), 10)

        def results() -> list[dict[str, Any]]:
            return [m.json() for m in sub.messages if m.topic == "alvh/cmd/result"]

        def retained_silences() -> list[dict[str, Any]]:
            return [m.json() for m in sub.messages if m.topic == "alvh/silences"]

        # A malformed command: an error reply, nothing applied.
        ops.publish(
            "alvh/cmd/silence",
            json.dumps({"matchers": {"token": "WETH"}, "duration": "1h", "request_id": "bad"}),
        )
        sub.wait_for(lambda ms: any(r.get("request_id") == "bad" for r in results()), 10)
        [bad] = [r for r in results() if r.get("request_id") == "bad"]
        assert bad["ok"] is False
        assert any(e.startswith("matchers.token:") for e in bad["errors"])
        assert any(e.startswith("author:") for e in bad["errors"])
        assert retained_silences()[-1] == {"silences": [], "acks": []}

        t = drive(devchain, random_walk(devchain.market.eth_price, 90, 0.001, seed=1), t)
        # Silence L2 for a short while, then crash: L1 alerts, L2 fires silently.
        ops.publish(
            "alvh/cmd/silence",
            json.dumps(
                {
                    "matchers": {"layer": "L2", "chain": "devchain"},
                    "duration": "15s",
                    "author": "ops@example",
                    "comment": "test window",
                    "request_id": "s1",
                }
            ),
        )
        sub.wait_for(lambda ms: any(r.get("request_id") == "s1" for r in results()), 10)
        [ok] = [r for r in results() if r.get("request_id") == "s1"]
        assert ok["ok"] is True, ok
        sid = ok["silence"]["id"]
        sub.wait_for(
            lambda ms: any(
                s["silences"] and s["silences"][0]["id"] == sid for s in retained_silences()
            ),
            10,
        )
        crash_price = devchain.market.eth_price * 0.88
        t = drive(devchain, [crash_price], t)
        layer_topic = f"alvh/layers/devchain/{devchain.market.v3_500.address}/L2"
        got = sub.wait_for(
            lambda ms: (
                bool(alerts(ms, "firing", "L1"))
                and any(m.topic == layer_topic and m.json()["state"] == "firing" for m in ms)
            ),
            60,
        )
        assert alerts(got, "firing", "L2") == [], "a silenced layer must not alert"
        # The silence expires while L2 still fires: its firing event comes through.
        got = sub.wait_for(lambda ms: bool(alerts(ms, "firing", "L2")), 60)
        [released] = alerts(got, "firing", "L2")
        assert released["layer"] == "L2"
        sub.wait_for(lambda ms: retained_silences()[-1]["silences"] == [], 10)
        log = daemon.log()
        assert "alert withheld" in log
        assert "withheld firing released" in log
        assert daemon.stop() == 0
    ops.stop()
    sub.stop()
