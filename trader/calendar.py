"""NYSE market calendar: which days trade, and when they open and close.

The calendar is rules-based and needs no network and no third-party calendar
package.  Regular sessions run 09:30-16:00 America/New_York; early closes end
at 13:00.  All public times are UTC nanoseconds (``int``), the program's single
internal time representation.

Rules (accurate from 1993 on; earlier years apply the same rules, which the
exchange did not always follow, so treat them as approximate):

* Weekends are closed.
* New Year's Day: Jan 1, a Sunday is observed on Monday Jan 2.  A Saturday
  Jan 1 is *not* observed on Friday Dec 31 (NYSE keeps the year-end trading
  day open).
* Martin Luther King Jr. Day: third Monday of January, from 1998.
* Washington's Birthday: third Monday of February.
* Good Friday: two days before Western Easter Sunday.
* Memorial Day: last Monday of May.
* Juneteenth: June 19, from 2022, Saturday -> Friday, Sunday -> Monday.
* Independence Day: July 4, Saturday -> Friday, Sunday -> Monday.
* Labor Day: first Monday of September.
* Thanksgiving: fourth Thursday of November.
* Christmas: Dec 25, Saturday -> Friday, Sunday -> Monday.
* Special closures: 1994-04-27 (Nixon), 2001-09-11..14, 2004-06-11 (Reagan),
  2007-01-02 (Ford), 2012-10-29/30 (Sandy), 2018-12-05 (Bush),
  2025-01-09 (Carter).

Early closes at 13:00:

* July 3 when it is Monday-Thursday (July 4 on Tuesday-Friday).  Before 2013
  a Thursday July 4 moved the early close to Friday July 5 instead of
  Wednesday July 3.
* The day after Thanksgiving.
* Christmas Eve when it is Monday-Thursday.
* The Fridays after Christmas 1997-12-26 and 2003-12-26.

A handful of one-off unscheduled hours since 1993 (snow, a circuit breaker,
moments of silence) are listed in ``_IRREGULAR_HOURS`` so that the close time
of a daily bar on those days is the time the session really ended.
"""

from __future__ import annotations

import bisect
import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

import msgspec

__all__ = [
    "NEW_YORK",
    "Session",
    "is_open",
    "next_close_ns",
    "next_open_ns",
    "session_for",
    "sessions",
]

NEW_YORK = ZoneInfo("America/New_York")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)
_NS_PER_HOUR = 3_600_000_000_000
_REGULAR_OPEN = dt.time(9, 30)
_REGULAR_CLOSE = dt.time(16, 0)
_EARLY_CLOSE = dt.time(13, 0)

_MON, _TUE, _WED, _THU, _FRI, _SAT, _SUN = range(7)

_SPECIAL_CLOSURES: frozenset[dt.date] = frozenset(
    dt.date.fromisoformat(s)
    for s in (
        "1994-04-27",  # President Nixon's funeral
        "2001-09-11",  # September 11 attacks
        "2001-09-12",
        "2001-09-13",
        "2001-09-14",
        "2004-06-11",  # President Reagan's funeral
        "2007-01-02",  # President Ford's day of mourning
        "2012-10-29",  # Hurricane Sandy
        "2012-10-30",
        "2018-12-05",  # President G. H. W. Bush's day of mourning
        "2025-01-09",  # President Carter's day of mourning
    )
)

# Fridays after Christmas the exchange closed early by special decision.
_ADHOC_EARLY_CLOSES: frozenset[dt.date] = frozenset({dt.date(1997, 12, 26), dt.date(2003, 12, 26)})

# One-off unscheduled hours (open, close) in New York time, from the NYSE
# closings history.  Kept so a daily bar's close time is the true close.
_IRREGULAR_HOURS: dict[dt.date, tuple[dt.time, dt.time]] = {
    dt.date(1994, 2, 11): (_REGULAR_OPEN, dt.time(14, 30)),  # snowstorm
    dt.date(1996, 1, 8): (dt.time(11, 0), dt.time(14, 0)),  # snow
    dt.date(1997, 10, 27): (_REGULAR_OPEN, dt.time(15, 30)),  # circuit breaker
    dt.date(2001, 9, 17): (dt.time(9, 33), _REGULAR_CLOSE),  # moment of silence
    dt.date(2001, 10, 8): (dt.time(9, 31), _REGULAR_CLOSE),  # moment of silence
    dt.date(2002, 9, 11): (dt.time(12, 0), _REGULAR_CLOSE),  # 9/11 anniversary
    dt.date(2003, 3, 20): (dt.time(9, 32), _REGULAR_CLOSE),  # moment of silence
    dt.date(2004, 6, 7): (dt.time(9, 32), _REGULAR_CLOSE),  # moment of silence
    dt.date(2005, 6, 1): (_REGULAR_OPEN, dt.time(15, 56)),  # systems problem
    dt.date(2006, 12, 27): (dt.time(9, 32), _REGULAR_CLOSE),  # moment of silence
}


class Session(msgspec.Struct, frozen=True):
    """One trading session of the exchange.

    Attributes:
        date: The session's calendar date in New York.
        open_ns: Opening time, UTC nanoseconds.
        close_ns: Closing time, UTC nanoseconds (exclusive end of trading).
    """

    date: dt.date
    open_ns: int
    close_ns: int


def _ny_to_ns(day: dt.date, at: dt.time) -> int:
    """Convert a New York wall-clock time on ``day`` to UTC nanoseconds."""
    local = dt.datetime.combine(day, at, tzinfo=NEW_YORK)
    # Integer microsecond arithmetic: float timestamps would lose nanoseconds.
    return ((local - _EPOCH) // _ONE_US) * 1000


def ny_date(ts_ns: int) -> dt.date:
    """The New York calendar date of ``ts_ns``."""
    return _ns_to_ny_date(ts_ns)


def _ns_to_ny_date(ts_ns: int) -> dt.date:
    """Return the New York calendar date containing the UTC instant ``ts_ns``."""
    # New York's offsets are whole hours and its clocks change on the hour,
    # so the date is constant within a UTC hour: one time-zone conversion per
    # hour instead of per call (risk and the simulated broker ask per order).
    return _ny_date_of_utc_hour(ts_ns // _NS_PER_HOUR)


@lru_cache(maxsize=4096)
def _ny_date_of_utc_hour(hour: int) -> dt.date:
    utc = _EPOCH + dt.timedelta(hours=hour)
    return utc.astimezone(NEW_YORK).date()


def _easter(year: int) -> dt.date:
    """Return Western (Gregorian) Easter Sunday, anonymous Gregorian algorithm."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month, day = divmod(h + ell - 7 * m + 114, 31)
    return dt.date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    """Return the ``n``-th ``weekday`` (0=Monday) of a month, ``n`` from 1."""
    first = dt.date(year, month, 1)
    offset = (weekday - first.weekday()) % 7
    return first + dt.timedelta(days=offset + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> dt.date:
    """Return the last ``weekday`` (0=Monday) of a month."""
    nxt = dt.date(year + month // 12, month % 12 + 1, 1)
    last = nxt - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: dt.date) -> dt.date:
    """Move a Saturday holiday to Friday and a Sunday holiday to Monday."""
    if day.weekday() == _SAT:
        return day - dt.timedelta(days=1)
    if day.weekday() == _SUN:
        return day + dt.timedelta(days=1)
    return day


@lru_cache(maxsize=512)
def _holidays(year: int) -> frozenset[dt.date]:
    """Return the weekday full-day closures of ``year``."""
    days: set[dt.date] = set()
    new_year = dt.date(year, 1, 1)
    if new_year.weekday() == _SUN:
        days.add(new_year + dt.timedelta(days=1))
    elif new_year.weekday() != _SAT:
        # A Saturday New Year is not observed: NYSE keeps Dec 31 open.
        days.add(new_year)
    if year >= 1998:
        days.add(_nth_weekday(year, 1, _MON, 3))
    days.add(_nth_weekday(year, 2, _MON, 3))
    days.add(_easter(year) - dt.timedelta(days=2))
    days.add(_last_weekday(year, 5, _MON))
    if year >= 2022:
        days.add(_observed(dt.date(year, 6, 19)))
    days.add(_observed(dt.date(year, 7, 4)))
    days.add(_nth_weekday(year, 9, _MON, 1))
    days.add(_nth_weekday(year, 11, _THU, 4))
    days.add(_observed(dt.date(year, 12, 25)))
    days.update(d for d in _SPECIAL_CLOSURES if d.year == year)
    return frozenset(d for d in days if d.weekday() < _SAT)


@lru_cache(maxsize=512)
def _early_closes(year: int) -> frozenset[dt.date]:
    """Return the scheduled 13:00 early closes of ``year``."""
    days: set[dt.date] = set()
    july3 = dt.date(year, 7, 3)
    if july3.weekday() in (_MON, _TUE, _THU):
        days.add(july3)
    elif july3.weekday() == _WED:
        # Until 2012 a Thursday July 4 shortened Friday July 5 instead.
        days.add(july3 if year >= 2013 else dt.date(year, 7, 5))
    days.add(_nth_weekday(year, 11, _THU, 4) + dt.timedelta(days=1))
    christmas_eve = dt.date(year, 12, 24)
    if christmas_eve.weekday() in (_MON, _TUE, _WED, _THU):
        days.add(christmas_eve)
    days.update(d for d in _ADHOC_EARLY_CLOSES if d.year == year)
    return frozenset(days)


def _build_session(day: dt.date) -> Session | None:
    """Compute the session of ``day`` from the rules, or None when closed."""
    if day.weekday() >= _SAT or day in _holidays(day.year):
        return None
    if day in _IRREGULAR_HOURS:
        opens, closes = _IRREGULAR_HOURS[day]
    elif day in _early_closes(day.year):
        opens, closes = _REGULAR_OPEN, _EARLY_CLOSE
    else:
        opens, closes = _REGULAR_OPEN, _REGULAR_CLOSE
    return Session(date=day, open_ns=_ny_to_ns(day, opens), close_ns=_ny_to_ns(day, closes))


@lru_cache(maxsize=512)
def _year_sessions(year: int) -> tuple[Session, ...]:
    """Return every session of ``year`` in date order."""
    day = dt.date(year, 1, 1)
    out: list[Session] = []
    while day.year == year:
        s = _build_session(day)
        if s is not None:
            out.append(s)
        day += dt.timedelta(days=1)
    return tuple(out)


@lru_cache(maxsize=512)
def _year_opens(year: int) -> tuple[int, ...]:
    """Return the open times of ``year``'s sessions, for bisection."""
    return tuple(s.open_ns for s in _year_sessions(year))


@lru_cache(maxsize=512)
def _year_closes(year: int) -> tuple[int, ...]:
    """Return the close times of ``year``'s sessions, for bisection."""
    return tuple(s.close_ns for s in _year_sessions(year))


def sessions(start: dt.date, end: dt.date) -> list[Session]:
    """Return the sessions from ``start`` to ``end``, both inclusive.

    Args:
        start: First calendar date to consider.
        end: Last calendar date to consider.

    Returns:
        The sessions in date order; empty when ``end < start``.
    """
    out: list[Session] = []
    for year in range(start.year, end.year + 1):
        out.extend(s for s in _year_sessions(year) if start <= s.date <= end)
    return out


def session_for(d: dt.date) -> Session | None:
    """Return the session held on date ``d``, or None if the exchange is closed.

    Args:
        d: A New York calendar date.

    Returns:
        The session, or None on weekends, holidays and special closures.
    """
    year = _year_sessions(d.year)
    i = bisect.bisect_left(year, d, key=lambda s: s.date)
    if i < len(year) and year[i].date == d:
        return year[i]
    return None


def is_open(ts_ns: int) -> bool:
    """Tell whether the exchange is trading at UTC instant ``ts_ns``.

    A session covers ``[open_ns, close_ns)``: at the closing instant the
    market is already closed.
    """
    s = session_for(_ns_to_ny_date(ts_ns))
    return s is not None and s.open_ns <= ts_ns < s.close_ns


def next_open_ns(ts_ns: int) -> int:
    """Return the first session open strictly after ``ts_ns``.

    Like Alpaca's ``/v2/clock``: while the market is open this is the *next*
    session's open; before today's open it is today's open.
    """
    year = _ns_to_ny_date(ts_ns).year
    while True:
        opens = _year_opens(year)
        i = bisect.bisect_right(opens, ts_ns)
        if i < len(opens):
            return opens[i]
        year += 1


def next_close_ns(ts_ns: int) -> int:
    """Return the first session close strictly after ``ts_ns``.

    Like Alpaca's ``/v2/clock``: while the market is open this is today's
    close; otherwise it is the next session's close.
    """
    year = _ns_to_ny_date(ts_ns).year
    while True:
        closes = _year_closes(year)
        i = bisect.bisect_right(closes, ts_ns)
        if i < len(closes):
            return closes[i]
        year += 1
