"""Silences and acknowledgements, Alertmanager-style, commanded over MQTT.

Commands arrive as JSON on ``{prefix}/cmd/silence`` and ``{prefix}/cmd/ack``; every
command gets one reply on ``{prefix}/cmd/result``. The model (:class:`SilenceBook`) is
pure: it reads no clock (``now``, unix seconds, is an argument), does no I/O, and its
state round-trips through :meth:`SilenceBook.to_state` / :meth:`SilenceBook.from_state`
(plain JSON values, kept in the daemon's SQLite kv). :func:`attach` wires it into one
run of the daemon, through the :class:`~daemon.service.runtime.Runtime` it is given.

Guarantees:

- a command is validated completely before anything changes: bad JSON, an unknown key
  or matcher, a bad duration or regex, a missing author, an unknown id: the reply is
  ``{"ok": false, "errors": [...]}`` (every problem, each with its path) and the book is
  exactly as before; a valid command is applied whole and answered ``{"ok": true}``;
- a *silence* (matchers on ``chain`` / ``pool`` / ``layer``, all of which must match;
  at least one; exact strings or ``{"regex": ...}`` fully matched; pool addresses
  compare case-insensitively) is active from its creation until ``ends_at``
  (wall time). While one matches, every alert event of that (chain, pool, layer) is
  withheld: recorded in the journal, not published;
- expiry restores alerts: when the last silence covering a layer ends (expiry or an
  ``expire`` command) while that layer is still firing, its withheld ``firing`` event is
  released for publication (same id: consumers dedupe), so nobody misses a layer that
  fired during a maintenance window and is still firing after it. A layer that resolved
  inside the silence releases nothing (its firing and resolved were both withheld);
- an *acknowledgement* marks one firing episode (a (chain, pool, layer) firing since a
  given time) as seen: its ``repeat`` notifications (``repeat_interval``) are withheld
  until the episode ends. ``resolved`` and ``retracted`` events are always published
  (unless silenced), and end the acknowledgement. An ack names a firing alert's ``id``
  or matchers (every firing episode they match); acking nothing that fires is an error.
  Firing episodes are rebuilt from the layer states after a restart, so acks by matchers
  always work; an ack by ``alert_id`` needs an id the daemon saw while running (or kept
  with a persisted silence / ack / withheld firing);
- the retained ``{prefix}/silences`` payload is ``{"silences": [...], "acks": [...]}``
  (active ones, no timestamp of its own: it changes only when the book does);
- regexes are a safe subset (at most 64 characters; letters, digits, ``_ - . | ( ) [ ]
  ^ $ * + ?`` and the escapes ``\\. \\- \\d \\w``; no ``(?`` extensions, no ``{m,n}``,
  no quantified group, at most 4 quantifiers), so matching cannot blow up
  (catastrophic backtracking needs a quantified group or many quantifiers);
- everything is bounded: payload size, string lengths, at most
  :data:`MAX_SILENCES` active silences, durations up to :data:`MAX_DURATION`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import structlog

from daemon.service.store import QueuedAlert
from rules.alert import Alert, LayerStatus
from rules.durations import format_duration, iso_utc, parse_duration, parse_iso_utc

if TYPE_CHECKING:
    import aiomqtt

    from daemon.service.runtime import Runtime

CommandKind = Literal["silence", "ack"]
MatcherName = Literal["chain", "pool", "layer"]
WithheldWhy = Literal["silenced", "acknowledged"]

MATCHER_NAMES: tuple[MatcherName, ...] = ("chain", "pool", "layer")
MAX_PAYLOAD = 16 * 1024
MAX_SILENCES = 1000
MAX_DURATION = 30 * 86400
MAX_REGEX = 64
MAX_QUANTIFIERS = 4
MAX_AUTHOR = 128
MAX_COMMENT = 1024
MAX_VALUE = 128
MAX_REQUEST_ID = 128
#: Alert ids remembered per firing episode (for acks by alert id): the first and the latest.
MAX_EPISODE_IDS = 16
STATE_VERSION = 1

log = structlog.get_logger(component="alvh.silences")

_REGEX_CHARS = re.compile(r"[A-Za-z0-9_\-.|()\[\]^$*+?\\]*")
_REGEX_ESCAPES = frozenset(".-dw")
_ALERT_ID = re.compile(r"[0-9a-f]{32}")
_BOOK_ID = re.compile(r"[0-9a-f]{16}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_KEYS: dict[tuple[CommandKind, str], frozenset[str]] = {
    ("silence", "create"): frozenset(
        {"action", "matchers", "duration", "author", "comment", "request_id"}
    ),
    ("silence", "expire"): frozenset({"action", "id", "author", "comment", "request_id"}),
    ("ack", "create"): frozenset(
        {"action", "alert_id", "matchers", "author", "comment", "request_id"}
    ),
    ("ack", "expire"): frozenset({"action", "id", "author", "comment", "request_id"}),
}


class CommandError(Exception):
    """A command was refused; ``errors`` holds one line per problem, each with its path."""

    def __init__(self, errors: Sequence[str], request_id: str | int | None = None) -> None:
        self.errors = list(errors)
        self.request_id = request_id
        super().__init__("; ".join(self.errors))


# --- value types -----------------------------------------------------------------------


def check_regex(pattern: str) -> str | None:
    """Why ``pattern`` is outside the safe regex subset, or None when it is inside."""
    if not pattern:
        return "empty regex"
    if len(pattern) > MAX_REGEX:
        return f"regex longer than {MAX_REGEX} characters"
    if not _REGEX_CHARS.fullmatch(pattern):
        bad = sorted({c for c in pattern if not _REGEX_CHARS.fullmatch(c)})
        return f"regex uses characters outside the safe subset: {''.join(bad)!r}"
    quantifiers = 0
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1] if i + 1 < len(pattern) else ""
            if nxt not in _REGEX_ESCAPES:
                return "regex escapes other than \\. \\- \\d \\w are not allowed"
            i += 2
            continue
        if c == "(" and pattern[i + 1 : i + 2] == "?":
            return "regex group extensions '(?...)' are not allowed"
        if c in "*+?":
            quantifiers += 1
            if i > 0 and pattern[i - 1] == ")":
                # A quantified group is how backtracking goes exponential, e.g. (a+)+.
                return "a quantifier after a group is not allowed"
        i += 1
    if quantifiers > MAX_QUANTIFIERS:
        return f"regex has more than {MAX_QUANTIFIERS} quantifiers"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"invalid regex: {exc}"
    return None


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher: ``value`` equals the label, or (``regex``) fully matches it.
    ``pool`` matchers ignore case (hex addresses are written both ways)."""

    name: MatcherName
    value: str
    regex: bool = False
    _compiled: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.name not in MATCHER_NAMES:
            raise ValueError(f"unknown matcher {self.name!r} (allowed: {', '.join(MATCHER_NAMES)})")
        if not self.value or len(self.value) > MAX_VALUE:
            raise ValueError(f"a matcher value must have 1 to {MAX_VALUE} characters")
        if self.regex:
            problem = check_regex(self.value)
            if problem is not None:
                raise ValueError(problem)
            flags = re.IGNORECASE if self.name == "pool" else 0
            object.__setattr__(self, "_compiled", re.compile(self.value, flags))

    def matches(self, label: str) -> bool:
        if self._compiled is not None:
            return self._compiled.fullmatch(label) is not None
        if self.name == "pool":
            return label.lower() == self.value.lower()
        return label == self.value

    def to_json(self) -> str | dict[str, str]:
        return {"regex": self.value} if self.regex else self.value


def _matches_all(matchers: Iterable[Matcher], chain: str, pool: str, layer: str) -> bool:
    labels = {"chain": chain, "pool": pool, "layer": layer}
    return all(m.matches(labels[m.name]) for m in matchers)


def _matchers_json(matchers: Iterable[Matcher]) -> dict[str, str | dict[str, str]]:
    return {m.name: m.to_json() for m in matchers}


@dataclass(frozen=True, slots=True)
class Silence:
    """Withholds every alert of the layers it matches from ``starts_at`` until ``ends_at``."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: int
    ends_at: int
    author: str
    comment: str = ""

    def __post_init__(self) -> None:
        if not self.matchers:
            raise ValueError("a silence needs at least one matcher")
        if len({m.name for m in self.matchers}) != len(self.matchers):
            raise ValueError("a silence has at most one matcher per label")
        if self.ends_at <= self.starts_at:
            raise ValueError("a silence must end after it starts")

    def active(self, now: int) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, chain: str, pool: str, layer: str) -> bool:
        return _matches_all(self.matchers, chain, pool, layer)

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": _matchers_json(self.matchers),
            "starts_at": iso_utc(self.starts_at),
            "ends_at": iso_utc(self.ends_at),
            "author": self.author,
            "comment": self.comment,
        }

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Silence:
        return cls(
            id=str(p["id"]),
            matchers=_stored_matchers(p["matchers"]),
            starts_at=parse_iso_utc(str(p["starts_at"])),
            ends_at=parse_iso_utc(str(p["ends_at"])),
            author=str(p["author"]),
            comment=str(p.get("comment", "")),
        )


@dataclass(frozen=True, slots=True)
class Ack:
    """An acknowledged firing episode: (chain, pool, layer) firing since ``since``."""

    id: str
    chain: str
    pool: str
    layer: str
    since: int
    author: str
    created_at: int
    comment: str = ""
    alert_id: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "chain": self.chain,
            "pool": self.pool,
            "layer": self.layer,
            "since": iso_utc(self.since),
            "alert_id": self.alert_id,
            "author": self.author,
            "comment": self.comment,
            "created_at": iso_utc(self.created_at),
        }

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Ack:
        return cls(
            id=str(p["id"]),
            chain=str(p["chain"]),
            pool=str(p["pool"]),
            layer=str(p["layer"]),
            since=parse_iso_utc(str(p["since"])),
            author=str(p["author"]),
            created_at=parse_iso_utc(str(p["created_at"])),
            comment=str(p.get("comment", "")),
            alert_id=None if p.get("alert_id") is None else str(p["alert_id"]),
        )


@dataclass(frozen=True, slots=True)
class Held:
    """A ``firing`` event withheld by a silence, published if the layer outlives it."""

    id: str
    chain: str
    pool: str
    layer: str
    since: int
    topic_suffix: str
    payload: bytes

    def to_state(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "chain": self.chain,
            "pool": self.pool,
            "layer": self.layer,
            "since": self.since,
            "topic_suffix": self.topic_suffix,
            "payload": self.payload.decode(),
        }

    @classmethod
    def from_state(cls, p: Mapping[str, Any]) -> Held:
        return cls(
            id=str(p["id"]),
            chain=str(p["chain"]),
            pool=str(p["pool"]),
            layer=str(p["layer"]),
            since=int(p["since"]),
            topic_suffix=str(p["topic_suffix"]),
            payload=str(p["payload"]).encode(),
        )


@dataclass(frozen=True, slots=True)
class Episode:
    """A layer firing on a pool since ``since``, with (some of) its alert ids."""

    since: int
    alert_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Withheld:
    """An alert event the book kept from publication, and why."""

    alert: Alert
    why: WithheldWhy
    by: str
    note: str


@dataclass(frozen=True, slots=True)
class FilterResult:
    """What to publish now: ``released`` (older, withheld firings) first, then ``publish``."""

    publish: tuple[Alert, ...]
    withheld: tuple[Withheld, ...]
    released: tuple[Held, ...]


# --- commands --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SilenceCommand:
    action: Literal["create", "expire"]
    author: str
    comment: str = ""
    matchers: tuple[Matcher, ...] = ()
    duration: int = 0
    silence_id: str | None = None
    request_id: str | int | None = None


@dataclass(frozen=True, slots=True)
class AckCommand:
    action: Literal["create", "expire"]
    author: str
    comment: str = ""
    matchers: tuple[Matcher, ...] = ()
    alert_id: str | None = None
    ack_id: str | None = None
    request_id: str | int | None = None


Command = SilenceCommand | AckCommand


def _parse_matchers(raw: object, path: str, errors: list[str]) -> tuple[Matcher, ...]:
    if not isinstance(raw, dict):
        errors.append(f'{path}: must be an object like {{"layer": "L1"}}')
        return ()
    if not raw:
        errors.append(f"{path}: give at least one of {', '.join(MATCHER_NAMES)}")
        return ()
    out: list[Matcher] = []
    for name, given in raw.items():
        where = f"{path}.{name}"
        value = given
        if name not in MATCHER_NAMES:
            errors.append(f"{where}: unknown matcher (allowed: {', '.join(MATCHER_NAMES)})")
            continue
        regex = False
        if isinstance(value, dict):
            if set(value) != {"regex"}:
                errors.append(f'{where}: an object matcher is {{"regex": "..."}} only')
                continue
            value, regex, where = value["regex"], True, f"{where}.regex"
        if not isinstance(value, str):
            errors.append(f"{where}: must be a string")
            continue
        try:
            out.append(Matcher(name, value, regex))
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
    return tuple(out)


def _stored_matchers(raw: object) -> tuple[Matcher, ...]:
    errors: list[str] = []
    matchers = _parse_matchers(raw, "matchers", errors)
    if errors:
        raise ValueError("; ".join(errors))
    return matchers


def _text(
    obj: Mapping[str, Any], key: str, errors: list[str], *, required: bool, limit: int
) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            errors.append(f"{key}: required")
        return ""
    if not isinstance(value, str):
        errors.append(f"{key}: must be a string")
        return ""
    if required and not value.strip():
        errors.append(f"{key}: must not be empty")
    if len(value) > limit:
        errors.append(f"{key}: longer than {limit} characters")
    if key != "comment" and _CONTROL.search(value):
        errors.append(f"{key}: control characters are not allowed")
    return value


def _request_id(obj: Mapping[str, Any]) -> str | int | None:
    value = obj.get("request_id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and len(value) <= MAX_REQUEST_ID):
        return value
    return None


def parse_command(kind: CommandKind, payload: bytes) -> Command:
    """Parse and validate one command; raise :class:`CommandError` listing every problem."""
    if len(payload) > MAX_PAYLOAD:
        raise CommandError([f"payload larger than {MAX_PAYLOAD} bytes"])
    try:
        obj = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise CommandError(["payload is not UTF-8"]) from None
    except ValueError as exc:
        raise CommandError([f"payload is not JSON: {exc}"]) from None
    if not isinstance(obj, dict):
        raise CommandError(["payload must be a JSON object"])
    request_id = _request_id(obj)
    errors: list[str] = []
    if "request_id" in obj and request_id is None:
        errors.append(f"request_id: must be a string (<= {MAX_REQUEST_ID} chars) or an integer")
    action = obj.get("action", "create")
    if action not in ("create", "expire"):
        raise CommandError([f"action: must be 'create' or 'expire', got {action!r}"], request_id)
    allowed = _KEYS[(kind, action)]
    for key in sorted(set(obj) - allowed):
        errors.append(
            f"{key}: unknown key for {kind} {action} (allowed: {', '.join(sorted(allowed))})"
        )
    author = _text(obj, "author", errors, required=True, limit=MAX_AUTHOR)
    comment = _text(obj, "comment", errors, required=False, limit=MAX_COMMENT)

    if action == "expire":
        ident = obj.get("id")
        if not isinstance(ident, str) or not _BOOK_ID.fullmatch(ident):
            errors.append("id: required, the 16 hex digit id of the " + kind + " to expire")
            ident = None
        if errors:
            raise CommandError(errors, request_id)
        if kind == "silence":
            return SilenceCommand(
                "expire", author, comment, silence_id=ident, request_id=request_id
            )
        return AckCommand("expire", author, comment, ack_id=ident, request_id=request_id)

    if kind == "silence":
        matchers: tuple[Matcher, ...] = ()
        if "matchers" not in obj:
            errors.append("matchers: required")
        else:
            matchers = _parse_matchers(obj["matchers"], "matchers", errors)
        duration = 0
        raw = obj.get("duration")
        if raw is None:
            errors.append("duration: required, e.g. '2h'")
        elif isinstance(raw, bool) or not isinstance(raw, str | int):
            errors.append("duration: must be a string like '2h' or a number of seconds")
        else:
            try:
                duration = parse_duration(raw)
            except ValueError as exc:
                errors.append(f"duration: {exc}")
            else:
                if duration <= 0:
                    errors.append("duration: must be positive")
                elif duration > MAX_DURATION:
                    errors.append(f"duration: at most {format_duration(MAX_DURATION)}")
        if errors:
            raise CommandError(errors, request_id)
        return SilenceCommand(
            "create", author, comment, matchers=matchers, duration=duration, request_id=request_id
        )

    alert_id = obj.get("alert_id")
    ack_matchers: tuple[Matcher, ...] = ()
    if ("alert_id" in obj) == ("matchers" in obj):
        errors.append("alert_id, matchers: give exactly one of them")
    elif "alert_id" in obj:
        if not isinstance(alert_id, str) or not _ALERT_ID.fullmatch(alert_id):
            errors.append("alert_id: must be an alert's id (32 hex digits)")
    else:
        ack_matchers = _parse_matchers(obj["matchers"], "matchers", errors)
    if errors:
        raise CommandError(errors, request_id)
    return AckCommand(
        "create",
        author,
        comment,
        matchers=ack_matchers,
        alert_id=alert_id if isinstance(alert_id, str) else None,
        request_id=request_id,
    )


# --- the book --------------------------------------------------------------------------

Key = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The reply to one command, and whether the book changed."""

    reply: dict[str, Any]
    changed: bool


class SilenceBook:
    """Active silences, acknowledgements, firing episodes and withheld firings.

    Pure: every method that depends on time takes ``now`` (unix seconds, wall time).
    """

    def __init__(self, *, max_silences: int = MAX_SILENCES) -> None:
        self.max_silences = max_silences
        self.silences: dict[str, Silence] = {}
        self.acks: dict[str, Ack] = {}
        self.episodes: dict[Key, Episode] = {}
        self.held: dict[Key, Held] = {}
        self.serial = 0

    # -- queries ------------------------------------------------------------------------

    def is_silenced(self, chain: str, pool: str, layer: str, now: int) -> Silence | None:
        """The active silence covering this layer that lasts longest, or None."""
        best: Silence | None = None
        for s in self.silences.values():
            covers = s.active(now) and s.matches(chain, pool, layer)
            if covers and (best is None or s.ends_at > best.ends_at):
                best = s
        return best

    def is_acked(self, chain: str, pool: str, layer: str, since: int) -> Ack | None:
        for a in self.acks.values():
            if (a.chain, a.pool, a.layer, a.since) == (chain, pool, layer, since):
                return a
        return None

    def fingerprint(self) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        """Identifies the durable part of the book: silences, acks, withheld firings."""
        return (
            frozenset(self.silences),
            frozenset(self.acks),
            frozenset(h.id for h in self.held.values()),
        )

    def active_silences(self, now: int) -> list[Silence]:
        return sorted(
            (s for s in self.silences.values() if s.active(now)), key=lambda s: (s.ends_at, s.id)
        )

    def retained_payload(self, now: int) -> dict[str, Any]:
        """The retained ``{prefix}/silences`` payload: active silences and acks.
        No timestamp of its own, so an unchanged book gives an identical payload."""
        return {
            "silences": [s.to_payload() for s in self.active_silences(now)],
            "acks": [a.to_payload() for a in sorted(self.acks.values(), key=lambda a: a.id)],
        }

    # -- commands -----------------------------------------------------------------------

    def handle(self, kind: CommandKind, payload: bytes, now: int) -> Outcome:
        """Parse, validate and apply one command; never raises. On any error nothing
        changes and the reply says ``ok: false`` with every problem."""
        try:
            command = parse_command(kind, payload)
            reply = self.apply(command, now)
        except CommandError as exc:
            return Outcome(
                {
                    "ok": False,
                    "command": kind,
                    "request_id": exc.request_id,
                    "errors": exc.errors,
                },
                changed=False,
            )
        return Outcome(reply, changed=True)

    def apply(self, command: Command, now: int) -> dict[str, Any]:
        """Apply a parsed command. Semantic problems raise :class:`CommandError` before
        anything changes."""
        rid = command.request_id
        if isinstance(command, SilenceCommand):
            if command.action == "expire":
                assert command.silence_id is not None
                found = self.silences.get(command.silence_id)
                if found is None or not found.active(now):
                    raise CommandError([f"id: no active silence {command.silence_id}"], rid)
                del self.silences[found.id]
                return _ok("silence", "expire", rid, silence=found.to_payload())
            active = sum(1 for s in self.silences.values() if s.active(now))
            if active >= self.max_silences:
                raise CommandError([f"too many active silences (at most {self.max_silences})"], rid)
            self.serial += 1
            silence = Silence(
                id=_book_id("silence", self.serial, now, command.author, command.comment),
                matchers=command.matchers,
                starts_at=now,
                ends_at=now + command.duration,
                author=command.author,
                comment=command.comment,
            )
            self.expire_silences(now)
            self.silences[silence.id] = silence
            return _ok("silence", "create", rid, silence=silence.to_payload())

        if command.action == "expire":
            assert command.ack_id is not None
            ack = self.acks.pop(command.ack_id, None)
            if ack is None:
                raise CommandError([f"id: no acknowledgement {command.ack_id}"], rid)
            return _ok("ack", "expire", rid, acks=[ack.to_payload()])
        targets: list[tuple[Key, Episode]] = []
        if command.alert_id is not None:
            targets = [(k, e) for k, e in self.episodes.items() if command.alert_id in e.alert_ids]
            if not targets:
                raise CommandError(
                    [f"alert_id: {command.alert_id} is not the id of a layer firing now"], rid
                )
        else:
            targets = [
                (k, e)
                for k, e in sorted(self.episodes.items())
                if _matches_all(command.matchers, *k)
            ]
            if not targets:
                raise CommandError(["matchers: no layer firing now matches"], rid)
        made: list[Ack] = []
        for key, episode in targets:
            for old in [a for a in self.acks.values() if (a.chain, a.pool, a.layer) == key]:
                del self.acks[old.id]
            self.serial += 1
            ack = Ack(
                id=_book_id("ack", self.serial, now, command.author, command.comment),
                chain=key[0],
                pool=key[1],
                layer=key[2],
                since=episode.since,
                author=command.author,
                created_at=now,
                comment=command.comment,
                alert_id=command.alert_id,
            )
            self.acks[ack.id] = ack
            made.append(ack)
        return _ok("ack", "create", rid, acks=[a.to_payload() for a in made])

    # -- time ---------------------------------------------------------------------------

    def expire_silences(self, now: int) -> list[Silence]:
        """Forget silences that ended; return them."""
        gone = [s for s in self.silences.values() if s.ends_at <= now]
        for s in gone:
            del self.silences[s.id]
        return gone

    def expire(self, now: int) -> list[Held]:
        """Forget ended silences and release the withheld firings of layers that still
        fire and that no active silence covers any more (oldest first)."""
        self.expire_silences(now)
        released = [h for k, h in self.held.items() if self.is_silenced(*k, now) is None]
        for h in released:
            del self.held[(h.chain, h.pool, h.layer)]
        return sorted(released, key=lambda h: (h.since, h.id))

    # -- the alert path ------------------------------------------------------------------

    def filter(self, alerts: Sequence[Alert], now: int) -> FilterResult:
        """Decide, for each alert event in order, publish or withhold; track firing
        episodes. Calls :meth:`expire` first, so released firings precede new events."""
        released = self.expire(now)
        publish: list[Alert] = []
        withheld: list[Withheld] = []
        for a in alerts:
            key = (a.chain, a.pool, a.layer)
            held_retracted = False
            if a.event == "firing":
                episode = self.episodes.get(key)
                if episode is None or episode.since != a.since:
                    self._end_episode(key)
                    episode = Episode(a.since)
                if a.id not in episode.alert_ids:
                    ids = (*episode.alert_ids, a.id)
                    if len(ids) > MAX_EPISODE_IDS:
                        ids = (ids[0], *ids[-(MAX_EPISODE_IDS - 1) :])
                    episode = Episode(episode.since, ids)
                self.episodes[key] = episode
            elif a.event == "resolved":
                self._end_episode(key)
            else:  # retracted: the firing it retracts never happened
                held = self.held.get(key)
                if held is not None and held.id == a.retracts:
                    del self.held[key]
                    held_retracted = True
                episode = self.episodes.get(key)
                if episode is not None and a.retracts in episode.alert_ids:
                    self._end_episode(key)

            silence = self.is_silenced(*key, now)
            if silence is not None or held_retracted:
                by = silence.id if silence is not None else a.retracts or ""
                note = (
                    f"silenced by {silence.id} ({silence.author})"
                    if silence is not None
                    else f"retracts the silenced alert {a.retracts}"
                )
                withheld.append(Withheld(a, "silenced", by, note))
                if a.event == "firing" and not a.repeat and key not in self.held:
                    self.held[key] = Held(
                        a.id, a.chain, a.pool, a.layer, a.since, a.topic_suffix, a.to_json()
                    )
                continue
            ack = self.is_acked(*key, a.since) if a.event == "firing" and a.repeat else None
            if ack is not None:
                withheld.append(
                    Withheld(a, "acknowledged", ack.id, f"acknowledged by {ack.author}")
                )
                continue
            publish.append(a)
        return FilterResult(tuple(publish), tuple(withheld), tuple(released))

    def observe_layers(self, statuses: Iterable[LayerStatus]) -> bool:
        """Follow the retained layer states: a layer firing since t is an episode (so it
        can be acked by matchers, also after a restart); any other state ends it.
        Returns True when something changed."""
        changed = False
        for st in statuses:
            key = (st.chain, st.pool, st.layer)
            episode = self.episodes.get(key)
            if st.state == "firing" and st.since is not None:
                if episode is None or episode.since != st.since:
                    self._end_episode(key)
                    self.episodes[key] = Episode(st.since)
                    changed = True
            elif episode is not None or key in self.held:
                self._end_episode(key)
                changed = True
        return changed

    def _end_episode(self, key: Key) -> None:
        self.episodes.pop(key, None)
        self.held.pop(key, None)
        for a in [a for a in self.acks.values() if (a.chain, a.pool, a.layer) == key]:
            del self.acks[a.id]

    # -- state --------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Plain JSON values (for the daemon's kv store)."""
        return {
            "version": STATE_VERSION,
            "serial": self.serial,
            "silences": [s.to_payload() for s in self.silences.values()],
            "acks": [a.to_payload() for a in self.acks.values()],
            "episodes": [
                {
                    "chain": k[0],
                    "pool": k[1],
                    "layer": k[2],
                    "since": e.since,
                    "alert_ids": list(e.alert_ids),
                }
                for k, e in self.episodes.items()
            ],
            "held": [h.to_state() for h in self.held.values()],
        }

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], *, max_silences: int = MAX_SILENCES
    ) -> SilenceBook:
        """Rebuild a book; ValueError when ``state`` is not one :meth:`to_state` wrote."""
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ValueError("not a silence book state of version 1")
        book = cls(max_silences=max_silences)
        try:
            book.serial = int(state["serial"])
            for p in state["silences"]:
                s = Silence.from_payload(p)
                book.silences[s.id] = s
            for p in state["acks"]:
                a = Ack.from_payload(p)
                book.acks[a.id] = a
            for p in state["episodes"]:
                key = (str(p["chain"]), str(p["pool"]), str(p["layer"]))
                book.episodes[key] = Episode(int(p["since"]), tuple(str(i) for i in p["alert_ids"]))
            for p in state["held"]:
                h = Held.from_state(p)
                book.held[(h.chain, h.pool, h.layer)] = h
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed silence book state: {exc!r}") from None
        return book


def _ok(
    kind: CommandKind, action: str, request_id: str | int | None, **body: Any
) -> dict[str, Any]:
    return {"ok": True, "command": kind, "action": action, "request_id": request_id, **body}


def _book_id(kind: str, serial: int, now: int, author: str, comment: str) -> str:
    # Deterministic (no randomness, no clock): the serial makes it unique within a book.
    text = f"{kind}|{serial}|{now}|{author}|{comment}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the daemon side -------------------------------------------------------------------

KV_KEY = "silences.v1"
#: How often (seconds) ended silences are looked for, so withheld firings are released.
EXPIRY_CHECK_SECONDS = 5


class SilenceService:
    """The book inside a running daemon: command handlers, the alert filter used by
    ``Run._emit``, the expiry job and the retained ``{prefix}/silences`` topic.

    Everything runs on the daemon's event loop (the expiry job is a coroutine, so
    APScheduler's asyncio executor runs it there, not in a thread).
    """

    def __init__(self, runtime: Runtime, book: SilenceBook) -> None:
        self.runtime = runtime
        self.book = book
        self.prefix = runtime.mqtt.topic_prefix

    @staticmethod
    def now() -> int:
        return int(time.time())

    def filter(self, alerts: Sequence[Alert], layers: Sequence[LayerStatus]) -> list[Alert]:
        """The alerts of one block (or reorg) that may be published. Withheld ones go to
        the journal; released firings go to the outbox, in one transaction with the
        book's state."""
        now = self.now()
        before = self.book.fingerprint()
        result = self.book.filter(alerts, now)
        self.book.observe_layers(layers)
        # Episodes alone are not worth a write per block: after a restart they are
        # rebuilt from the layer states. Silences, acks and withheld firings are.
        if result.withheld or result.released or self.book.fingerprint() != before:
            self._commit(result.released, result.withheld, now)
        return list(result.publish)

    def _commit(self, released: Sequence[Held], withheld: Sequence[Withheld], now: int) -> None:
        store, publisher = self.runtime.store, self.runtime.publisher
        qos = self.runtime.mqtt.qos
        queued = [
            QueuedAlert(
                h.id,
                f"{self.prefix}/{h.topic_suffix}",
                h.payload,
                max(qos, 1) if qos else 0,
                h.pool,
            )
            for h in released
        ]
        journal = [
            (w.alert.id, w.why, f"{self.prefix}/{w.alert.topic_suffix}", w.alert.to_json(), w.note)
            for w in withheld
        ]
        store.commit(queued, journal=journal, kv=[(KV_KEY, self.book.to_state())])
        for w in withheld:
            self.runtime.metrics.alerts_suppressed.labels(layer=w.alert.layer, why=w.why).inc()
            log.info(
                "alert withheld",
                why=w.why,
                kind=w.alert.event,
                chain=w.alert.chain,
                pool=w.alert.pool,
                layer=w.alert.layer,
                id=w.alert.id,
                note=w.note,
            )
        for h in released:
            log.info(
                "silence ended, withheld firing released",
                chain=h.chain,
                pool=h.pool,
                layer=h.layer,
                id=h.id,
            )
        if queued:
            publisher.notify()
        self.retain(now)

    def retain(self, now: int) -> None:
        self.runtime.publisher.retain("silences", self.book.retained_payload(now))

    async def tick(self) -> None:
        """The expiry job: forget ended silences, release what they withheld."""
        now = self.now()
        before = self.book.fingerprint()
        released = self.book.expire(now)
        if released or self.book.fingerprint() != before:
            self._commit(released, (), now)

    async def on_silence(self, message: aiomqtt.Message) -> None:
        await self._command("silence", message)

    async def on_ack(self, message: aiomqtt.Message) -> None:
        await self._command("ack", message)

    async def _command(self, kind: CommandKind, message: aiomqtt.Message) -> None:
        now = self.now()
        raw = message.payload
        payload = bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw or "").encode()
        if message.retain:
            # A retained command would be applied again at every reconnect.
            outcome = Outcome(
                {
                    "ok": False,
                    "command": kind,
                    "request_id": None,
                    "errors": ["retained commands are ignored: publish without the retain flag"],
                },
                changed=False,
            )
        else:
            outcome = self.book.handle(kind, payload, now)
        if outcome.changed:
            released = self.book.expire(now)
            self._commit(released, (), now)
            log.info(
                "command applied",
                command=kind,
                action=outcome.reply.get("action"),
                request_id=outcome.reply.get("request_id"),
            )
        else:
            log.warning(
                "command refused",
                command=kind,
                request_id=outcome.reply.get("request_id"),
                errors=outcome.reply.get("errors"),
            )
        body = json.dumps(outcome.reply, separators=(",", ":")).encode()
        await self.runtime.publisher.publish_now(f"{self.prefix}/cmd/result", body)


def attach(runtime: Runtime) -> SilenceService:
    """Restore the book from the run's store, subscribe the command topics (unless
    ``mqtt.commands = false``), schedule the expiry job and retain ``{prefix}/silences``.
    Call once per run, before the publisher runs."""
    book = SilenceBook()
    saved = runtime.store.get(KV_KEY)
    if saved is not None:
        try:
            book = SilenceBook.from_state(saved)
        except ValueError as exc:
            log.warning("silences not restored, starting with none", reason=str(exc))
    service = SilenceService(runtime, book)
    book.observe_layers(runtime.pipeline.layer_statuses())
    prefix = runtime.mqtt.topic_prefix
    if runtime.mqtt.commands:
        runtime.publisher.subscribe(f"{prefix}/cmd/silence", service.on_silence)
        runtime.publisher.subscribe(f"{prefix}/cmd/ack", service.on_ack)
    runtime.scheduler.add_job(
        service.tick,
        "interval",
        seconds=EXPIRY_CHECK_SECONDS,
        id="silences-expiry",
        replace_existing=True,
    )
    service.retain(service.now())
    return service
