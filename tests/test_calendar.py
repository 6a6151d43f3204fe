"""Tests of rules.calendar: the crontab parser and fire times against APScheduler 3 as an
oracle, calendar windows (edges, overlaps, explicit dates), the vectorised series against
the scalar function, and window transitions against a brute-force scan."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from apscheduler.triggers.cron import CronTrigger
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.calendar import (
    MAX_TIME,
    CalendarWindow,
    CronError,
    CronSpec,
    WindowEdge,
    active_windows,
    fire_times,
    next_fire,
    parse_cron,
    prev_fire,
    threshold_scale,
    threshold_scale_series,
    transitions,
)

HOUR = 3600
US_CPI = "30 12 10-16 * *"  # DESIGN.md's example


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def iso(t: int | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def apscheduler_next(text: str, after: int) -> int | None:
    """The oracle: APScheduler's first fire time strictly after ``after`` (its search
    is inclusive of ``now``, hence the +1 second)."""
    trigger = CronTrigger.from_crontab(text, timezone=UTC)
    fired = trigger.get_next_fire_time(None, datetime.fromtimestamp(after + 1, UTC))
    return None if fired is None else int(fired.timestamp())


def apscheduler_accepts(text: str) -> bool:
    try:
        CronTrigger.from_crontab(text, timezone=UTC)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- cron tables

CPI_NEXT = [
    # (after, next fire strictly after it)
    ("2024-05-01T00:00:00", "2024-05-10T12:30:00"),
    ("2024-05-10T12:29:59", "2024-05-10T12:30:00"),
    ("2024-05-10T12:30:00", "2024-05-11T12:30:00"),  # strictly after
    ("2024-05-16T12:30:00", "2024-06-10T12:30:00"),
    ("2024-02-16T12:30:00", "2024-03-10T12:30:00"),
    ("2024-12-16T13:00:00", "2025-01-10T12:30:00"),
    ("1969-12-31T00:00:00", "1970-01-10T12:30:00"),  # nothing before 1970 (as APScheduler)
]


@pytest.mark.parametrize(("after", "expected"), CPI_NEXT)
def test_us_cpi_next_fire(after: str, expected: str) -> None:
    spec = parse_cron(US_CPI)
    assert iso(next_fire(spec, ts(after))) == expected
    if ts(after) >= 0:
        assert iso(apscheduler_next(US_CPI, ts(after))) == expected


CPI_PREV = [
    ("2024-05-10T12:30:00", "2024-05-10T12:30:00"),  # at or before: inclusive
    ("2024-05-10T12:30:59", "2024-05-10T12:30:00"),
    ("2024-05-10T12:29:59", "2024-04-16T12:30:00"),
    ("2024-01-09T00:00:00", "2023-12-16T12:30:00"),
    ("1970-01-10T12:29:00", None),
]


@pytest.mark.parametrize(("at", "expected"), CPI_PREV)
def test_us_cpi_prev_fire(at: str, expected: str | None) -> None:
    assert iso(prev_fire(parse_cron(US_CPI), ts(at))) == expected


def test_parse_fields() -> None:
    spec = parse_cron("*/15 9-17/4 1,15,last jan,jul-aug mon-fri")
    assert spec.minutes == (0, 15, 30, 45)
    assert spec.hours == (9, 13, 17)
    assert spec.days == (1, 15)
    assert spec.last_day
    assert spec.months == (1, 7, 8)
    assert spec.weekdays == (0, 1, 2, 3, 4)
    assert str(spec) == "*/15 9-17/4 1,15,last jan,jul-aug mon-fri"
    assert parse_cron("5/20 * */10 * *").minutes == (5, 25, 45)
    assert parse_cron("5/20 * */10 * *").days == (1, 11, 21, 31)
    assert parse_cron("0 0 * JAN-Mar SUN").months == (1, 2, 3)
    assert parse_cron("0 0 * JAN-Mar SUN").weekdays == (6,)
    assert parse_cron(" 0\t0  LAST * * ").last_day
    assert parse_cron("0-0/5 * * * *").minutes == (0,)  # accepted, as APScheduler does


def test_weekday_zero_is_monday_as_in_apscheduler_3() -> None:
    """APScheduler 3's from_crontab numbers weekdays from Monday = 0 (unlike Unix cron)."""
    spec = parse_cron("0 0 * * 0")
    assert spec.weekdays == (0,)
    monday = ts("2024-05-13T00:00:00")
    assert datetime.fromtimestamp(monday, UTC).weekday() == 0
    assert next_fire(spec, monday - 1) == monday == apscheduler_next("0 0 * * 0", monday - 1)
    assert parse_cron("0 0 * * 6").weekdays == parse_cron("0 0 * * sun").weekdays


def test_day_and_weekday_must_both_match() -> None:
    """APScheduler 3 ANDs day-of-month and day-of-week (Vixie cron would OR them)."""
    friday_13 = parse_cron("0 0 13 * fri")
    fired = next_fire(friday_13, ts("2024-01-01T00:00:00"))
    assert iso(fired) == "2024-09-13T00:00:00"
    assert fired == apscheduler_next("0 0 13 * fri", ts("2024-01-01T00:00:00"))


def test_rare_specs_are_found_quickly() -> None:
    leap_monday = parse_cron("0 0 29 feb mon")
    assert iso(next_fire(leap_monday, ts("2024-03-01T00:00:00"))) == "2044-02-29T00:00:00"
    assert iso(prev_fire(leap_monday, ts("2044-02-28T00:00:00"))) == "2016-02-29T00:00:00"


def test_end_of_calendar() -> None:
    spec = parse_cron("59 23 31 12 *")
    assert next_fire(spec, MAX_TIME - 60) == MAX_TIME - 59
    assert next_fire(spec, MAX_TIME - 59) is None
    assert next_fire(spec, MAX_TIME + 10**6) is None
    assert prev_fire(spec, MAX_TIME + 10**6) == MAX_TIME - 59
    assert prev_fire(spec, -1) is None


REJECTED = [
    # (text, field named in the error, message fragment, does APScheduler accept it?)
    ("30 12 10-16 *", None, "expected 5 fields", False),
    ("* * * * * *", None, "got 6", False),
    ("@daily", None, "macros like '@daily' are not supported", False),
    ("", None, "got 0", False),
    ("60 * * * *", "minute", "60 is outside 0-59", False),
    ("* 24 * * *", "hour", "24 is outside 0-23", False),
    ("* * 0 * *", "day", "0 is outside 1-31", False),
    ("* * 32 * *", "day", "32 is outside 1-31", False),
    ("* * * 13 *", "month", "13 is outside 1-12", False),
    ("* * * 0 *", "month", "0 is outside 1-12", False),
    ("* * * * 7", "day_of_week", "APScheduler 3 numbers weekdays 0=mon .. 6=sun", False),
    ("*/0 * * * *", "minute", "must be at least 1", False),
    ("*/60 * * * *", "minute", "step 60 is larger than the range 59", False),
    ("* */24 * * *", "hour", "step 24 is larger", False),
    ("5-1 * * * *", "minute", "starts after it ends", False),
    ("59/1 * * * *", "minute", "step 1 is larger than the range 0", False),
    ("50/10 * * * *", "minute", "step 10 is larger than the range 9", False),
    ("1-5/5 * * * *", "minute", "step 5 is larger than the range 4", False),
    ("1,,2 * * * *", "minute", "empty list item", False),
    ("1, * * * *", "minute", "empty list item", False),
    ("a * * * *", "minute", "names are allowed only in the month and day_of_week fields", False),
    ("* * mon * *", "day", "names are allowed only", False),
    ("* * * jna *", "month", "unknown month name 'jna'", False),
    ("* * * * sunday", "day_of_week", "unknown weekday name 'sunday'", False),
    ("* * * * sun-mon", "day_of_week", "starts after it ends", False),
    ("* * * dec-jan *", "month", "starts after it ends", False),
    ("* * L * *", "day", "'L', 'W' and '?' are not supported", False),
    ("* * 15W * *", "day", "'L', 'W' and '?' are not supported", False),
    ("* * ? * *", "day", "'L', 'W' and '?' are not supported", False),
    ("* * * * 5#3", "day_of_week", "'#' and 'L' are not supported", False),
    ("* * * * 5L", "day_of_week", "'#' and 'L' are not supported", False),
    ("1.5 * * * *", "minute", "is not one of", False),
    ("-1 * * * *", "minute", "is not one of", False),
    # APScheduler accepts these but reads them differently from what is written:
    ("* * * jan-jun/2 *", "month", "nothing may follow a name", True),  # it ignores "/2"
    ("* * * * mon-fri/2", "day_of_week", "nothing may follow a name", True),
    ("* * * * mon-5", "day_of_week", "nothing may follow a name", True),  # it reads "mon"
    ("* * * jan5 *", "month", "nothing may follow a name", True),
    ("* * last-1 * *", "day", "nothing may follow a name", True),  # it reads "last"
    ("* * lastday * *", "day", "nothing may follow a name", True),
    ("٣ * * * *", "minute", "use ASCII digits", True),  # Arabic-Indic 3
    # ... and these, which it accepts but which never fire:
    ("0 0 30 2 *", "day", "never fires", True),
    ("0 0 31 apr,jun,sep,nov *", "day", "never fires", True),
]


@pytest.mark.parametrize(("text", "field", "fragment", "apscheduler"), REJECTED)
def test_rejected(text: str, field: str | None, fragment: str, apscheduler: bool) -> None:
    with pytest.raises(CronError) as caught:
        parse_cron(text)
    error = caught.value
    assert error.field == field
    assert fragment in error.message
    assert error.text == text
    assert str(error).startswith(f"cron {text!r}: " + (f"{field} field: " if field else ""))
    assert apscheduler_accepts(text) is apscheduler


def test_never_firing_spec_built_directly() -> None:
    spec = CronSpec("0 0 30 2 *", (0,), (0,), (30,), False, (2,), tuple(range(7)))
    assert spec.never_fires
    assert next_fire(spec, 0) is None
    assert prev_fire(spec, MAX_TIME) is None
    assert fire_times(spec, 0, MAX_TIME).size == 0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"minutes": (60,)}, "0..59"),
        ({"minutes": (5, 1)}, "sorted"),
        ({"minutes": ()}, "must not be empty"),
        ({"days": (), "last_day": False}, "needs days or last_day"),
        ({"weekdays": (7,)}, "0..6"),
        ({"hours": (True,)}, "ints"),
    ],
)
def test_cron_spec_validates_itself(kwargs: dict[str, object], fragment: str) -> None:
    fields: dict[str, object] = {
        "text": "x",
        "minutes": (0,),
        "hours": (0,),
        "days": (1,),
        "last_day": False,
        "months": (1,),
        "weekdays": (0,),
    }
    fields.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        CronSpec(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- oracle


MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@st.composite
def cron_items(draw: st.DrawFn, low: int, high: int, names: list[str] | None, day: bool) -> str:
    """One list item, mostly valid, sometimes just out of range or with a bad step."""
    value = (
        st.integers(low - 1, high + 1) if draw(st.integers(0, 9)) == 0 else st.integers(low, high)
    )
    a, b = sorted((draw(value), draw(value)))
    step = draw(st.integers(0, high - low + 2))
    choices = [
        "*",
        f"*/{step}",
        f"{a}",
        f"{a}-{b}",
        f"{a}-{b}/{step}",
        f"{a}/{step}",
        f"{b}-{a}",
    ]
    if names:
        first, last = sorted((draw(st.sampled_from(names)), draw(st.sampled_from(names))),
                             key=names.index)  # fmt: skip
        choices += [first, f"{first}-{last}", f"{last}-{first}".upper()]
    if day:
        choices.append(draw(st.sampled_from(["last", "Last"])))
    return draw(st.sampled_from(choices))


def cron_field(
    low: int, high: int, names: list[str] | None = None, day: bool = False
) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just("*"),
        st.lists(cron_items(low, high, names, day), min_size=1, max_size=3).map(",".join),
    )


cron_texts = st.tuples(
    cron_field(0, 59),
    cron_field(0, 23),
    cron_field(1, 31, day=True),
    cron_field(1, 12, MONTHS),
    cron_field(0, 6, WEEKDAYS),
).map(" ".join)
# 1970 .. 2100
instants = st.integers(0, 4_102_444_800)


def check_against_oracle(text: str, times: list[int]) -> None:
    apscheduler = apscheduler_accepts(text)
    try:
        spec = parse_cron(text)
    except CronError as caught:
        error: CronError | None = caught
    else:
        error = None
    if error is not None:
        if apscheduler:  # only the documented, deliberate differences
            assert "never fires" in error.message or "nothing may follow a name" in error.message
            if "never fires" in error.message:
                assert apscheduler_next(text, times[0]) is None
        return
    assert apscheduler, f"{text!r} accepted here, rejected by APScheduler"
    for after in times:
        assert next_fire(spec, after) == apscheduler_next(text, after), (text, iso(after))


@given(cron_texts, st.lists(instants, min_size=1, max_size=4))
@settings(max_examples=700, deadline=None)
def test_cron_matches_apscheduler(text: str, times: list[int]) -> None:
    check_against_oracle(text, times)


CRON_ALPHABET = "0123456789*/-,LW?#adefjlmnorstuwy"


def noisy(field: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A grammar field, random text over the cron alphabet, or the two glued together."""
    junk = st.text(CRON_ALPHABET, min_size=1, max_size=7)
    glued = st.tuples(field, junk).map("".join)
    # mostly clean, so that the other four fields often parse and the noise is reached
    return st.integers(0, 9).flatmap(lambda k: junk if k == 0 else glued if k == 1 else field)


noisy_cron_texts = st.tuples(
    noisy(cron_field(0, 59)),
    noisy(cron_field(0, 23)),
    noisy(st.one_of(cron_field(1, 31, day=True), st.sampled_from(["29", "30", "31", "30,31"]))),
    noisy(st.one_of(cron_field(1, 12, MONTHS), st.sampled_from(["2", "feb", "apr,jun,sep,nov"]))),
    noisy(cron_field(0, 6, WEEKDAYS)),
).map(" ".join)


@given(noisy_cron_texts, instants)
@settings(max_examples=1000, deadline=None)
def test_noisy_cron_text_matches_apscheduler(text: str, after: int) -> None:
    check_against_oracle(text, [after])


@given(st.text(max_size=40), instants)
@settings(max_examples=300, deadline=None)
def test_arbitrary_text_is_parsed_or_rejected_like_apscheduler(text: str, after: int) -> None:
    """Any text parses or raises CronError (nothing else) quoting the text, and
    APScheduler agrees on which, and on the next fire time."""
    try:
        parse_cron(text)
    except CronError as caught:
        error: CronError | None = caught
    else:
        error = None
    if error is not None:
        assert error.text == text
        assert str(error).startswith(f"cron {text!r}: ")
    check_against_oracle(text, [after])


@given(cron_texts, instants)
@settings(max_examples=300, deadline=None)
def test_prev_fire_is_the_latest_fire_at_or_before(text: str, at: int) -> None:
    try:
        spec = parse_cron(text)
    except CronError:
        return
    previous = prev_fire(spec, at)
    if previous is None:
        assert next_fire(spec, -1) is None or next_fire(spec, -1) > at  # type: ignore[operator]
        return
    assert previous <= at
    assert previous % 60 == 0
    assert next_fire(spec, previous - 1) == previous  # it is a fire time
    following = next_fire(spec, previous)
    assert following is None or following > at  # and no fire in (previous, at]


@given(cron_texts, instants, st.integers(0, 2 * 86_400))
@settings(max_examples=150, deadline=None)
def test_fire_times_equal_iterated_next_fire(text: str, start: int, span: int) -> None:
    try:
        spec = parse_cron(text)
    except CronError:
        return
    expected = []
    fired = next_fire(spec, start - 1)
    while fired is not None and fired <= start + span:
        expected.append(fired)
        fired = next_fire(spec, fired)
    assert fire_times(spec, start, start + span).tolist() == expected


# --------------------------------------------------------------------------- windows


def window(
    name: str = "US CPI",
    *,
    cron: str | None = US_CPI,
    dates: tuple[int, ...] = (),
    before: int = 2 * HOUR,
    after: int = 4 * HOUR,
    scale: float = 0.75,
) -> CalendarWindow:
    return CalendarWindow(
        name=name,
        cron=parse_cron(cron) if cron is not None else None,
        dates=dates,
        before=before,
        after=after,
        threshold_scale=scale,
    )


CPI = window()
FOMC = window(
    "FOMC", cron=None, dates=(ts("2024-05-10T14:00:00"),), before=HOUR, after=HOUR, scale=0.5
)

SCALES = [
    # (windows, time, expected scale)
    ((CPI,), "2024-05-10T10:29:59", 1.0),
    ((CPI,), "2024-05-10T10:30:00", 0.75),  # o - before is inclusive
    ((CPI,), "2024-05-10T12:30:00", 0.75),
    ((CPI,), "2024-05-10T16:29:59", 0.75),
    ((CPI,), "2024-05-10T16:30:00", 1.0),  # o + after is exclusive
    ((CPI,), "2024-05-16T16:00:00", 0.75),
    ((CPI,), "2024-05-17T12:30:00", 1.0),  # day 17 is outside 10-16
    ((CPI, FOMC), "2024-05-10T12:59:59", 0.75),
    ((CPI, FOMC), "2024-05-10T13:00:00", 0.375),  # overlapping windows multiply
    ((CPI, FOMC), "2024-05-10T14:59:59", 0.375),
    ((CPI, FOMC), "2024-05-10T15:00:00", 0.75),
    ((FOMC,), "2024-05-10T13:00:00", 0.5),
    ((FOMC,), "2024-05-11T13:00:00", 1.0),
    ((), "2024-05-10T12:30:00", 1.0),
]


@pytest.mark.parametrize(("windows", "at", "expected"), SCALES)
def test_threshold_scale(windows: tuple[CalendarWindow, ...], at: str, expected: float) -> None:
    assert threshold_scale(windows, ts(at)) == expected
    assert threshold_scale_series(windows, np.array([ts(at)])).tolist() == [expected]


def test_overlapping_occurrences_of_one_window_count_once() -> None:
    every_5_minutes = window("dense", cron="*/5 * * * *", before=0, after=600, scale=0.5)
    assert threshold_scale([every_5_minutes], ts("2024-05-10T12:07:00")) == 0.5
    assert active_windows([CPI, every_5_minutes, FOMC], ts("2024-05-10T13:30:00")) == (
        CPI,
        every_5_minutes,
        FOMC,
    )


def test_cron_and_dates_are_united() -> None:
    extra = ts("2024-05-20T12:30:00")
    both = window(dates=(extra, extra, ts("2024-05-01T00:00:00")))
    assert both.dates == (ts("2024-05-01T00:00:00"), extra)  # sorted, deduplicated
    assert threshold_scale([both], extra) == 0.75
    assert threshold_scale([both], ts("2024-05-10T12:30:00")) == 0.75
    assert both.occurrences(ts("2024-05-15T00:00:00"), ts("2024-05-31T00:00:00")).tolist() == [
        ts("2024-05-15T12:30:00"),
        ts("2024-05-16T12:30:00"),
        extra,
    ]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": ""}, "name must not be empty"),
        ({"cron": None, "dates": ()}, "needs a cron or dates"),
        ({"before": -1}, "before must be >= 0"),
        ({"after": -5}, "after must be >= 0"),
        ({"before": 1.5}, "int of seconds"),
        ({"before": 0, "after": 0}, "never be active"),
        ({"threshold_scale": 0.0}, "threshold_scale must be > 0"),
        ({"threshold_scale": -0.5}, "threshold_scale must be > 0"),
        ({"threshold_scale": float("nan")}, "threshold_scale must be > 0"),
        ({"threshold_scale": float("inf")}, "threshold_scale must be > 0"),
        ({"threshold_scale": True}, "must be a number"),
        ({"dates": (-1,)}, "dates must be unix seconds"),
        ({"dates": (1.5,)}, "dates must be unix seconds"),
        ({"cron": "30 12 * * *"}, "cron must be a CronSpec"),
    ],
)
def test_window_validates_itself(kwargs: dict[str, object], fragment: str) -> None:
    fields: dict[str, object] = {
        "name": "w",
        "cron": parse_cron(US_CPI),
        "dates": (),
        "before": 60,
        "after": 60,
        "threshold_scale": 0.75,
    }
    fields.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        CalendarWindow(**fields)  # type: ignore[arg-type]


def test_integer_scale_is_stored_as_float() -> None:
    assert window(scale=2).threshold_scale == 2.0
    assert isinstance(window(scale=2).threshold_scale, float)


# Windows for the properties: dense crons and dates so that edges and overlaps are common.
BASE = ts("2024-05-10T00:00:00")


@st.composite
def random_windows(draw: st.DrawFn) -> list[CalendarWindow]:
    found = []
    for k in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["cron", "dates", "both"]))
        cron = draw(st.sampled_from(["*/7 * * * *", US_CPI, "0 */2 * * *", "15,20 * * * *"]))
        moments = st.integers(BASE - HOUR, BASE + 30 * HOUR)
        dates = draw(st.lists(moments, min_size=kind == "dates", max_size=4))
        before = draw(st.integers(0, 3 * HOUR))
        found.append(
            CalendarWindow(
                name=f"w{k}",
                cron=parse_cron(cron) if kind != "dates" else None,
                dates=tuple(dates) if kind != "cron" else (),
                before=before,
                after=draw(st.integers(0 if before else 1, 3 * HOUR)),
                # never 1.0, so that "scale != 1" tells activity in the scan below
                threshold_scale=draw(st.sampled_from([0.5, 0.75, 0.9, 1.25, 2.0])),
            )
        )
    return found


@given(random_windows(), st.lists(st.integers(BASE - 2 * HOUR, BASE + 48 * HOUR), max_size=40))
@settings(max_examples=300, deadline=None)
def test_series_equals_scalar(windows: list[CalendarWindow], times: list[int]) -> None:
    series = threshold_scale_series(windows, np.array(times, dtype=np.int64))
    assert series.dtype == np.float64
    assert series.tolist() == [threshold_scale(windows, t) for t in times]


def test_series_input_checks() -> None:
    assert threshold_scale_series([CPI], np.array([], dtype=np.int64)).size == 0
    with pytest.raises(ValueError, match="integer"):
        threshold_scale_series([CPI], np.array([1.5]))
    with pytest.raises(ValueError, match="1-D"):
        threshold_scale_series([CPI], np.zeros((2, 2), dtype=np.int64))


# --------------------------------------------------------------------------- transitions


def test_us_cpi_transitions_in_may_2024() -> None:
    edges = transitions([CPI], ts("2024-05-01T00:00:00"), ts("2024-06-01T00:00:00"))
    assert len(edges) == 14
    assert edges[0] == WindowEdge(ts("2024-05-10T10:30:00"), "US CPI", "start", 0.75)
    assert edges[1] == WindowEdge(ts("2024-05-10T16:30:00"), "US CPI", "end", 1.0)
    assert edges[-1] == WindowEdge(ts("2024-05-16T16:30:00"), "US CPI", "end", 1.0)
    # (start, end]: an edge exactly at start is left out, one exactly at end is kept
    assert transitions([CPI], ts("2024-05-10T10:30:00"), ts("2024-05-10T16:30:00")) == [edges[1]]


def test_transitions_with_overlap_report_the_combined_scale() -> None:
    edges = transitions([CPI, FOMC], ts("2024-05-10T00:00:00"), ts("2024-05-11T00:00:00"))
    assert [(iso(e.time), e.name, e.kind, e.threshold_scale) for e in edges] == [
        ("2024-05-10T10:30:00", "US CPI", "start", 0.75),
        ("2024-05-10T13:00:00", "FOMC", "start", 0.375),
        ("2024-05-10T15:00:00", "FOMC", "end", 0.75),
        ("2024-05-10T16:30:00", "US CPI", "end", 1.0),
    ]


def test_merged_occurrences_have_no_inner_edges() -> None:
    dense = window("dense", cron="*/5 * * * *", before=0, after=300, scale=0.5)
    assert transitions([dense], BASE, BASE + 6 * HOUR) == []  # always active: no edge


def test_simultaneous_edges_put_ends_first() -> None:
    first = window("a", cron=None, dates=(BASE,), before=0, after=HOUR, scale=0.5)
    second = window("b", cron=None, dates=(BASE + HOUR,), before=0, after=HOUR, scale=0.25)
    edges = transitions([second, first], BASE - 1, BASE + 3 * HOUR)
    assert [(e.time - BASE, e.name, e.kind, e.threshold_scale) for e in edges] == [
        (0, "a", "start", 0.5),
        (HOUR, "a", "end", 0.25),
        (HOUR, "b", "start", 0.25),
        (2 * HOUR, "b", "end", 1.0),
    ]


def test_window_edge_validates_itself() -> None:
    with pytest.raises(ValueError, match="kind"):
        WindowEdge(0, "w", "begin", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold_scale"):
        WindowEdge(0, "w", "start", 0.0)


@given(random_windows(), st.integers(BASE - HOUR, BASE + 24 * HOUR), st.integers(0, 3 * HOUR))
@settings(max_examples=150, deadline=None)
def test_transitions_equal_a_second_by_second_scan(
    windows: list[CalendarWindow], start: int, span: int
) -> None:
    end = start + span
    seconds = np.arange(start, end + 1, dtype=np.int64)
    expected = []
    for position, w in enumerate(windows):
        active = threshold_scale_series([w], seconds) != 1.0  # this window alone
        changed = np.nonzero(active[1:] != active[:-1])[0] + 1
        for index in changed:
            kind = "start" if active[index] else "end"
            expected.append((int(seconds[index]), 0 if kind == "end" else 1, position, kind))
    expected.sort()
    edges = transitions(windows, start, end)
    assert [(e.time, e.name, e.kind) for e in edges] == [
        (t, windows[p].name, kind) for t, _, p, kind in expected
    ]
    for edge in edges:
        assert edge.threshold_scale == threshold_scale(windows, edge.time)


@given(random_windows(), st.integers(BASE - HOUR, BASE + 24 * HOUR), st.integers(0, 6 * HOUR),
       st.integers(0, 6 * HOUR))  # fmt: skip
@settings(max_examples=150, deadline=None)
def test_transitions_split_without_loss_or_repeat(
    windows: list[CalendarWindow], start: int, first: int, second: int
) -> None:
    middle, end = start + first, start + first + second
    assert transitions(windows, start, middle) + transitions(windows, middle, end) == transitions(
        windows, start, end
    )


def test_absurdly_long_numbers_are_a_cron_error() -> None:
    for text in (
        "1" * 5000 + " * * * *",
        "*/" + "9" * 5000 + " * * * *",
        "0-" + "1" * 20 + " * * * *",
    ):
        with pytest.raises(CronError, match="minute field"):
            parse_cron(text)


def test_cron_error_survives_pickling() -> None:
    import pickle

    with pytest.raises(CronError) as caught:
        parse_cron("* * * * 7")
    again = pickle.loads(pickle.dumps(caught.value))
    assert (again.message, again.text, again.field, str(again)) == (
        caught.value.message,
        caught.value.text,
        caught.value.field,
        str(caught.value),
    )
