"""Tests for the rules-based NYSE calendar in trader.calendar."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from trader import calendar

UTC = dt.UTC


def _ns(text: str) -> int:
    """Convert an ISO 8601 UTC timestamp string to nanoseconds."""
    t = dt.datetime.fromisoformat(text)
    return int(t.timestamp()) * 1_000_000_000


def _day(text: str) -> dt.date:
    """Parse an ISO date."""
    return dt.date.fromisoformat(text)


def _session(text: str) -> calendar.Session:
    """Return the session of an ISO date, which must be a trading day."""
    s = calendar.session_for(_day(text))
    assert s is not None, text
    return s


def test_every_2024_holiday_is_closed() -> None:
    """All ten 2024 NYSE holidays have no session."""
    holidays = [
        "2024-01-01", "2024-01-15", "2024-02-19", "2024-03-29", "2024-05-27",
        "2024-06-19", "2024-07-04", "2024-09-02", "2024-11-28", "2024-12-25",
    ]  # fmt: skip
    for day in holidays:
        assert calendar.session_for(_day(day)) is None, day


def test_2024_early_closes_end_at_one_pm_new_york() -> None:
    """July 3, the day after Thanksgiving and Christmas Eve 2024 close at 13:00 ET."""
    assert _session("2024-07-03").close_ns == _ns("2024-07-03T17:00:00+00:00")
    assert _session("2024-11-29").close_ns == _ns("2024-11-29T18:00:00+00:00")
    assert _session("2024-12-24").close_ns == _ns("2024-12-24T18:00:00+00:00")


def test_ordinary_day_runs_nine_thirty_to_four() -> None:
    """A normal winter session is 14:30Z-21:00Z."""
    s = calendar.session_for(_day("2024-01-02"))
    assert s == calendar.Session(
        date=_day("2024-01-02"),
        open_ns=_ns("2024-01-02T14:30:00+00:00"),
        close_ns=_ns("2024-01-02T21:00:00+00:00"),
    )


def test_open_time_follows_daylight_saving_change() -> None:
    """The UTC open moves from 14:30Z to 13:30Z across the March 2024 DST switch."""
    assert _session("2024-03-08").open_ns == _ns("2024-03-08T14:30:00+00:00")
    assert _session("2024-03-11").open_ns == _ns("2024-03-11T13:30:00+00:00")


def test_special_closures_have_no_session() -> None:
    """One-off closures (9/11, funerals, Sandy) are closed days."""
    for day in [
        "2001-09-11", "2001-09-14", "2004-06-11", "2007-01-02", "2012-10-29",
        "2012-10-30", "2018-12-05", "2025-01-09",
    ]:  # fmt: skip
        assert calendar.session_for(_day(day)) is None, day


def test_observed_holidays_move_off_weekends() -> None:
    """Sunday holidays close Monday and Saturday holidays close Friday."""
    assert calendar.session_for(_day("2023-01-02")) is None  # New Year on Sunday
    assert calendar.session_for(_day("2022-12-26")) is None  # Christmas on Sunday
    assert calendar.session_for(_day("2021-12-24")) is None  # Christmas on Saturday
    assert calendar.session_for(_day("2020-07-03")) is None  # July 4 on Saturday
    assert calendar.session_for(_day("2022-06-20")) is None  # Juneteenth on Sunday


def test_saturday_new_year_keeps_december_31_open() -> None:
    """NYSE does not close Friday Dec 31 when Jan 1 is a Saturday."""
    assert _session("2021-12-31").close_ns == _ns("2021-12-31T21:00:00+00:00")


def test_juneteenth_and_mlk_start_in_their_first_years() -> None:
    """Juneteenth closes from 2022 and MLK day from 1998, not before."""
    assert calendar.session_for(_day("2021-06-18")) is not None
    assert calendar.session_for(_day("1997-01-20")) is not None
    assert calendar.session_for(_day("1998-01-19")) is None


def test_thursday_independence_day_moved_early_close_in_2013() -> None:
    """A Thursday July 4 shortened the Friday after until 2012 and the Wednesday before since."""
    assert _session("2002-07-05").close_ns == _ns("2002-07-05T17:00:00+00:00")
    assert _session("2002-07-03").close_ns == _ns("2002-07-03T20:00:00+00:00")
    assert _session("2013-07-03").close_ns == _ns("2013-07-03T17:00:00+00:00")


def test_session_counts_per_year() -> None:
    """2023 has 250 sessions and 2024 has 252."""
    assert len(calendar.sessions(_day("2023-01-01"), _day("2023-12-31"))) == 250
    assert len(calendar.sessions(_day("2024-01-01"), _day("2024-12-31"))) == 252


def test_sessions_is_inclusive_and_ordered() -> None:
    """The range includes both ends and spans year boundaries in order."""
    got = calendar.sessions(_day("2023-12-29"), _day("2024-01-03"))
    assert [s.date for s in got] == [_day("2023-12-29"), _day("2024-01-02"), _day("2024-01-03")]
    assert calendar.sessions(_day("2024-01-03"), _day("2024-01-02")) == []


def test_is_open_covers_open_but_not_close_instant() -> None:
    """The session interval is half-open: open instant trades, close instant does not."""
    assert not calendar.is_open(_ns("2024-01-02T14:29:59+00:00"))
    assert calendar.is_open(_ns("2024-01-02T14:30:00+00:00"))
    assert calendar.is_open(_ns("2024-01-02T20:59:59+00:00"))
    assert not calendar.is_open(_ns("2024-01-02T21:00:00+00:00"))
    assert not calendar.is_open(_ns("2024-01-06T16:00:00+00:00"))  # Saturday


def test_clock_during_session_points_to_todays_close_and_next_open() -> None:
    """While open, next close is today's close and next open is tomorrow's open."""
    now = _ns("2024-01-02T16:00:00+00:00")
    assert calendar.next_close_ns(now) == _ns("2024-01-02T21:00:00+00:00")
    assert calendar.next_open_ns(now) == _ns("2024-01-03T14:30:00+00:00")


def test_clock_over_weekend_and_holiday_points_to_next_session() -> None:
    """After Friday's close the next open skips the weekend and the MLK holiday."""
    now = _ns("2024-01-12T22:00:00+00:00")
    assert calendar.next_open_ns(now) == _ns("2024-01-16T14:30:00+00:00")
    assert calendar.next_close_ns(now) == _ns("2024-01-16T21:00:00+00:00")


def test_clock_before_open_points_to_todays_open() -> None:
    """Early in the morning the next open is the same day's open."""
    now = _ns("2024-01-02T12:00:00+00:00")
    assert calendar.next_open_ns(now) == _ns("2024-01-02T14:30:00+00:00")
    assert calendar.next_close_ns(now) == _ns("2024-01-02T21:00:00+00:00")


def test_clock_crosses_year_end() -> None:
    """After the last session of a year the next open is in January."""
    now = _ns("2024-12-31T21:30:00+00:00")
    assert calendar.next_open_ns(now) == _ns("2025-01-02T14:30:00+00:00")


@given(st.integers(min_value=_ns("1995-01-01T00:00:00Z"), max_value=_ns("2035-01-01T00:00:00Z")))
def test_clock_is_consistent_with_is_open(ts_ns: int) -> None:
    """The market is open exactly when the next close comes before the next open."""
    nxt_open = calendar.next_open_ns(ts_ns)
    nxt_close = calendar.next_close_ns(ts_ns)
    assert nxt_open > ts_ns
    assert nxt_close > ts_ns
    assert calendar.is_open(ts_ns) == (nxt_close < nxt_open)


@given(st.integers(min_value=_ns("1995-01-01T00:00:00Z"), max_value=_ns("2035-01-01T00:00:00Z")))
def test_new_york_date_is_the_wall_calendar_date_at_every_instant(ts_ns: int) -> None:
    """The date an instant belongs to in New York, across midnights and DST changes."""
    utc = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=ts_ns // 1000)
    assert calendar.ny_date(ts_ns) == utc.astimezone(calendar.NEW_YORK).date()


def test_new_york_date_turns_at_local_midnight_in_winter_and_summer() -> None:
    # 05:00 UTC in January and 04:00 UTC in July are midnight in New York.
    assert calendar.ny_date(_ns("2024-01-16T04:59:59+00:00")) == _day("2024-01-15")
    assert calendar.ny_date(_ns("2024-01-16T05:00:00+00:00")) == _day("2024-01-16")
    assert calendar.ny_date(_ns("2024-07-16T03:59:59+00:00")) == _day("2024-07-15")
    assert calendar.ny_date(_ns("2024-07-16T04:00:00+00:00")) == _day("2024-07-16")
