"""``trader data fetch``: historical bars from Alpaca's data API into our CSVs, resumably.

Life of one symbol's fetch::

    .fetch-AAPL.json (the manifest) says how far earlier runs got
      -> AAPL.csv.part is cut back to the bytes the manifest vouches for
         (a page half-written by a killed run disappears)
      -> GET /v2/stocks/bars from the last bar written on, page by page:
           convert (Alpaca's ``t`` is the bar *start*; our ``ts`` is its close),
           append to the part file, fsync, then replace the manifest
      -> after the last page: AAPL.meta.json (the sidecar, with the
         adjustment), rename the part to AAPL.csv, manifest ``complete``

So a run killed anywhere loses at most the page in flight, and the next run
with the same arguments continues after the last bar written: no gap, no
duplicate. A later ``--end`` extends a complete file the same way. A manifest
written with another timeframe, feed, adjustment or hours is refused rather
than mixed into one file.

Close times: intraday bars close ``timeframe`` after their start; daily bars
at their session's close per :mod:`trader.calendar` (13:00 on early-close
days). Unless ``extended_hours``, only bars overlapping the regular session
are kept (a bar closing after the open and at or before the close).

Requests go through alpaca-py's ``StockHistoricalDataClient`` in a worker
thread, one page (up to 10,000 bars) per request, at most
:attr:`FetchPolicy.per_minute` a minute (the free plan's 200). alpaca-py's own
retries (3 s sleeps on 429/504 inside the thread) are off; we retry 429, 5xx,
timeouts and dropped connections with jittered exponential backoff (a 429
waits for ``X-Ratelimit-Reset``, capped) and give up with :class:`FetchError`
after :attr:`FetchPolicy.attempts`.

What it is not: a validator. Bars are written as the API sends them;
``trader data check`` judges them.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, Protocol

import anyio
import msgspec
import requests
import structlog
from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

from trader import calendar
from trader.data.store import TIMEFRAMES, Meta, atomic_write, format_ts, write_meta
from trader.errors import DataError
from trader.ratelimit import RateLimiter
from trader.secrets import Credentials

with warnings.catch_warnings():
    # alpaca.data imports its websockets.legacy stream client, which warns on
    # import; we use only the REST client.
    warnings.filterwarnings("ignore", "websockets.legacy", DeprecationWarning)
    from alpaca.common.enums import Sort
    from alpaca.common.exceptions import APIError
    from alpaca.data.enums import Adjustment as AlpacaAdjustment
    from alpaca.data.enums import DataFeed
    from alpaca.data.historical import StockHistoricalDataClient
    from alpaca.data.requests import StockBarsRequest
    from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

__all__ = [
    "AlpacaBarsSource",
    "BarsSource",
    "DataSourceUnavailable",
    "FetchError",
    "FetchPolicy",
    "FetchResult",
    "FetchSpec",
    "Manifest",
    "Page",
    "fetch",
]

log = structlog.get_logger("trader.data.fetch")

Timeframe = Literal["1Min", "5Min", "1Hour", "1Day"]
Feed = Literal["iex", "sip"]
Adjustment = Literal["raw", "split", "dividend", "all"]

HEADER: Final = "symbol,ts,open,high,low,close,volume,vwap,trades\n"
PAGE_LIMIT: Final = 10_000  # Alpaca's largest page
_MANIFEST_VERSION: Final = 1
_NS: Final = 1_000_000_000
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US: Final = dt.timedelta(microseconds=1)


class FetchError(DataError):
    """The fetch cannot go on: a refused request, retries spent, a manifest
    that does not match the request, or a bar that cannot be placed."""


class DataSourceUnavailable(Exception):
    """A transient failure of one request (429, 5xx, timeout, dropped connection).

    Raised by a :class:`BarsSource`; :func:`fetch` retries it.

    Attributes:
        retry_after_s: How long the server asked us to wait, if it said.
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class FetchSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What to fetch.

    Attributes:
        symbols: Tickers, fetched one after the other.
        start: First New York date, inclusive.
        end: Last New York date, inclusive.
        timeframe: Bar size.
        feed: ``iex`` (free plan) or ``sip``.
        adjustment: Corporate-action adjustment of prices and volumes.
        extended_hours: Keep bars outside the regular session (intraday only).
    """

    symbols: tuple[str, ...]
    start: dt.date
    end: dt.date
    timeframe: Timeframe = "1Day"
    feed: Feed = "iex"
    adjustment: Adjustment = "raw"
    extended_hours: bool = False

    def __post_init__(self) -> None:
        if not self.symbols or len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"symbols must be unique and non-empty: {self.symbols!r}")
        if any(not s or s != s.strip() or "/" in s or "," in s for s in self.symbols):
            raise ValueError(f"bad symbol in {self.symbols!r}")
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        if self.timeframe not in TIMEFRAMES:
            raise ValueError(f"unknown timeframe {self.timeframe!r}")


class FetchPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How hard to try.

    Attributes:
        per_minute: Requests per minute at most (Alpaca's free data plan: 200).
        attempts: Tries per page before :class:`FetchError` (default 6).
        backoff_s: First retry pause, doubled each time, jittered to 50-100%.
        backoff_max_s: Longest pause, also the cap on a 429's reset wait.
        timeout_s: Socket timeout of one request (alpaca-py sets none).
    """

    per_minute: int = 200
    attempts: int = 6
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    timeout_s: float = 30.0


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """``<out>/.fetch-<SYMBOL>.json``: how far the fetch of one symbol got.

    Attributes:
        symbol, timeframe, feed, adjustment, extended_hours: What is being fetched;
            a later run must ask for the same or is refused.
        start, end: The dates covered so far (``YYYY-MM-DD``).
        last_close: Close time of the last bar written (RFC 3339), or None.
        last_close_ns: The same in UTC ns.
        rows: Bars written.
        part_bytes: Size of the data file that holds exactly those bars.
        complete: True once ``<SYMBOL>.csv`` holds every bar through ``end``.
    """

    version: int = _MANIFEST_VERSION
    symbol: str
    timeframe: str
    feed: str
    adjustment: str
    extended_hours: bool
    start: str
    end: str
    last_close: str | None = None
    last_close_ns: int | None = None
    rows: int = 0
    part_bytes: int = 0
    complete: bool = False


class Page(NamedTuple):
    """One page of bars: the raw bar objects and the token of the next page."""

    bars: list[dict[str, Any]]
    next_token: str | None


class BarsSource(Protocol):
    """Where bars come from: one blocking request per call (run in a worker thread)."""

    def page(self, symbol: str, start: dt.datetime, end: dt.datetime, token: str | None) -> Page:
        """Fetch one page of ``symbol``'s bars starting in ``[start, end]``.

        Raises:
            DataSourceUnavailable: A transient failure; the call may be repeated.
            FetchError: A definite refusal.
        """
        ...


class FetchResult(msgspec.Struct, frozen=True, kw_only=True):
    """What fetching one symbol did.

    Attributes:
        symbol: The ticker.
        path: The CSV file.
        rows: Bars in the file.
        added: Bars this run added.
        requests: Requests this run made (retries included).
        up_to_date: True when nothing needed fetching.
    """

    symbol: str
    path: str
    rows: int
    added: int
    requests: int
    up_to_date: bool = False


PageHook = Callable[[str, int, int | None], None]
"""Called after each page is on disk: symbol, bars added, last close (UTC ns)."""
RetryHook = Callable[[str, int, str], None]
"""Called before a retry pause: symbol, failed attempt number, the error."""


# --------------------------------------------------------------------------
# alpaca-py


class _SocketTimeout(HTTPAdapter):
    """An HTTP adapter that gives every request a socket timeout."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._timeout_s = timeout_s

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout_s
        return super().send(request, *args, **kwargs)


_TIMEFRAME_ARGS: Final = {
    "1Min": (1, TimeFrameUnit.Minute),
    "5Min": (5, TimeFrameUnit.Minute),
    "1Hour": (1, TimeFrameUnit.Hour),
    "1Day": (1, TimeFrameUnit.Day),
}


class AlpacaBarsSource:
    """Stock bars through alpaca-py's ``StockHistoricalDataClient``.

    Args:
        credentials: The API key pair.
        spec: Timeframe, feed and adjustment of every request.
        url: ``url_override`` (the sandbox's base URL); None for Alpaca's data host.
        timeout_s: Socket timeout of each request.
    """

    def __init__(
        self, credentials: Credentials, spec: FetchSpec, *, url: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self._spec = spec
        client = StockHistoricalDataClient(
            credentials.key_id, credentials.secret_key, url_override=url
        )
        # alpaca-py would sleep 3 s per 429 inside the worker thread, unseen
        # by our limiter and backoff; we retry ourselves.
        client._retry = 0
        client._retry_wait = 0
        client._retry_codes = []
        adapter = _SocketTimeout(timeout_s)
        client._session.mount("http://", adapter)
        client._session.mount("https://", adapter)
        self._client = client

    def page(self, symbol: str, start: dt.datetime, end: dt.datetime, token: str | None) -> Page:
        """One ``GET /v2/stocks/bars`` (see :meth:`BarsSource.page`)."""
        spec = self._spec
        amount, unit = _TIMEFRAME_ARGS[spec.timeframe]
        request = StockBarsRequest(
            symbol_or_symbols=symbol,
            timeframe=TimeFrame(amount, unit),
            start=start,
            end=end,
            adjustment=AlpacaAdjustment(spec.adjustment),
            feed=DataFeed(spec.feed),
            sort=Sort.ASC,
        )
        params = request.to_request_fields()
        params["limit"] = PAGE_LIMIT
        if token is not None:
            params["page_token"] = token
        try:
            response = self._client.get("/stocks/bars", params)
        except APIError as exc:
            raise _map_api_error(exc, symbol) from exc
        except requests.RequestException as exc:
            raise DataSourceUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(response, dict) or not isinstance(response.get("bars") or {}, dict):
            raise FetchError(f"{symbol}: unexpected answer from the data API: {response!r:.200}")
        bars = (response.get("bars") or {}).get(symbol) or []
        token = response.get("next_page_token")
        return Page(list(bars), str(token) if token else None)


def _map_api_error(exc: APIError, symbol: str) -> Exception:
    status = exc.status_code
    body = str(exc)[:300]
    if status == 429 or status is None or status >= 500:
        return DataSourceUnavailable(f"HTTP {status}: {body}", _reset_wait(exc))
    return FetchError(f"{symbol}: the data API refused the request: HTTP {status}: {body}")


def _reset_wait(exc: APIError) -> float | None:
    """Seconds until ``X-Ratelimit-Reset`` (epoch seconds), when the answer has it."""
    response = exc.response
    reset = response.headers.get("X-Ratelimit-Reset") if response is not None else None
    try:
        return max(0.0, float(reset) - time.time()) if reset else None
    except ValueError:
        return None


# --------------------------------------------------------------------------
# Converting bars


def _parse_start(text: object) -> int:
    try:
        when = dt.datetime.fromisoformat(str(text))
    except ValueError:
        raise FetchError(f"bad bar time {text!r}") from None
    if when.tzinfo is None:
        raise FetchError(f"bar time {text!r} has no UTC offset")
    return (when - _EPOCH) // _ONE_US * 1000


def _number(bar: dict[str, Any], key: str) -> float:
    try:
        value = float(bar[key])
    except (KeyError, TypeError, ValueError):
        raise FetchError(f"bar {bar!r:.200}: field {key!r} is missing or not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise FetchError(f"bar {bar!r:.200}: field {key!r} is not finite")
    return value


def _close_ns(start_ns: int, spec: FetchSpec) -> int | None:
    """Our ``ts`` for a bar starting at ``start_ns``, or None to drop it (outside hours).

    Raises:
        FetchError: A daily bar on a day :mod:`trader.calendar` says was closed.
    """
    minutes = TIMEFRAMES[spec.timeframe]
    day = dt.datetime.fromtimestamp(start_ns // _NS, calendar.NEW_YORK).date()
    session = calendar.session_for(day)
    if minutes is None:
        if session is None:
            raise FetchError(f"a daily bar on {day}, which the exchange calendar says was closed")
        return session.close_ns
    close = start_ns + minutes * 60 * _NS
    if spec.extended_hours or (session is not None and session.open_ns < close <= session.close_ns):
        return close
    return None


def _rows(symbol: str, bars: Sequence[dict[str, Any]], spec: FetchSpec,
          after_ns: int | None, now_ns: int) -> list[tuple[int, str]]:
    """Convert bars to (close ns, CSV line), keeping those closing after ``after_ns``
    and by ``now_ns`` (a bar still forming would be written once, half-made).

    Raises:
        FetchError: A malformed bar, or bars not in time order.
    """
    out: list[tuple[int, str]] = []
    last = after_ns
    for bar in bars:
        close = _close_ns(_parse_start(bar.get("t")), spec)
        if close is None or (after_ns is not None and close <= after_ns) or close > now_ns:
            continue  # outside hours, already written by an earlier page or run, or forming
        if last is not None and close <= last:
            raise FetchError(f"{symbol}: bars out of time order at {format_ts(close)}")
        last = close
        o, h, lo, c, v = (_number(bar, k) for k in ("o", "h", "l", "c", "v"))
        vw = "" if bar.get("vw") is None else repr(_number(bar, "vw"))
        n = "" if bar.get("n") is None else str(int(_number(bar, "n")))
        # RFC 3339 for daily bars too: the close instant, not a date to look up.
        line = f"{symbol},{format_ts(close)},{o!r},{h!r},{lo!r},{c!r},{v!r},{vw},{n}\n"
        out.append((close, line))
    return out


# --------------------------------------------------------------------------
# Files


class _Files:
    def __init__(self, out: Path, symbol: str) -> None:
        self.csv = out / f"{symbol}.csv"
        self.part = out / f"{symbol}.csv.part"
        self.manifest = out / f".fetch-{symbol}.json"


def _read_manifest(path: Path) -> Manifest | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return msgspec.json.decode(raw, type=Manifest)
    except msgspec.DecodeError as exc:
        raise FetchError(
            f"{path}: unreadable fetch manifest ({exc}); delete it to start over"
        ) from None


def _write_manifest(files: _Files, m: Manifest) -> None:
    atomic_write(files.manifest, msgspec.json.format(msgspec.json.encode(m)) + b"\n")


def _fsync_append(path: Path, data: bytes) -> int:
    """Append and fsync; return the new size."""
    with path.open("ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
        return fh.tell()


class _Fetcher:
    def __init__(self, spec: FetchSpec, out: Path, source: BarsSource, policy: FetchPolicy,
                 limiter: RateLimiter, on_page: PageHook | None, on_retry: RetryHook | None,
                 sleep: Callable[[float], Awaitable[None]]) -> None:
        self.spec = spec
        self.out = out
        self.source = source
        self.policy = policy
        self.limiter = limiter
        self.on_page = on_page
        self.on_retry = on_retry
        self.sleep = sleep
        self.rng = random.Random()

    # --- resuming ------------------------------------------------------------------

    def _fresh(self, files: _Files, symbol: str) -> Manifest:
        spec = self.spec
        files.part.write_bytes(b"")
        size = _fsync_append(files.part, HEADER.encode())
        m = Manifest(symbol=symbol, timeframe=spec.timeframe, feed=spec.feed,
                     adjustment=spec.adjustment, extended_hours=spec.extended_hours,
                     start=spec.start.isoformat(), end=spec.end.isoformat(), part_bytes=size)
        _write_manifest(files, m)
        return m

    def _prepare(self, files: _Files, symbol: str) -> Manifest | None:
        """The manifest to continue from, with the part file matching it; None if up to date.

        Raises:
            FetchError: The files were written with other settings, or cannot be extended.
        """
        spec = self.spec
        m = _read_manifest(files.manifest)
        if m is None:
            if files.csv.exists():
                raise FetchError(
                    f"{files.csv} exists but has no {files.manifest.name}: it was not "
                    f"written by trader data fetch; move it or choose another --out")
            return self._fresh(files, symbol)
        asked = (spec.timeframe, spec.feed, spec.adjustment, spec.extended_hours)
        had = (m.timeframe, m.feed, m.adjustment, m.extended_hours)
        if asked != had:
            raise FetchError(
                f"{files.csv} was fetched with timeframe/feed/adjustment/extended_hours {had}, "
                f"this fetch asks for {asked}; refusing to mix them in one file: delete "
                f"{files.csv.name}, {files.manifest.name} and any .part, or choose another --out")
        if m.rows and spec.start < dt.date.fromisoformat(m.start):
            raise FetchError(f"{files.csv} starts at {m.start}; cannot add earlier bars to it "
                             f"(append-only): delete it and {files.manifest.name} to refetch")
        end = max(spec.end, dt.date.fromisoformat(m.end)).isoformat()
        if m.complete:
            if not files.csv.exists():
                log.warning("fetch.restart", symbol=symbol, reason=f"{files.csv} is gone")
                return self._fresh(files, symbol)
            if spec.end <= dt.date.fromisoformat(m.end):
                return None
            if files.csv.stat().st_size != m.part_bytes:
                raise FetchError(f"{files.csv} changed since it was fetched; delete it and "
                                 f"{files.manifest.name} to refetch")
            shutil.copyfile(files.csv, files.part)
        elif not files.part.exists() and files.csv.exists() and (
                files.csv.stat().st_size == m.part_bytes):
            os.replace(files.csv, files.part)  # killed between the rename and the manifest
        elif not files.part.exists() or files.part.stat().st_size < m.part_bytes:
            log.warning("fetch.restart", symbol=symbol, reason="the part file is missing or short")
            return self._fresh(files, symbol)
        # Drop whatever a killed run appended after the last manifest it wrote.
        os.truncate(files.part, m.part_bytes)
        m = msgspec.structs.replace(m, end=end, complete=False)
        _write_manifest(files, m)
        return m

    # --- one page at a time ------------------------------------------------------------

    async def _page(self, symbol: str, start: dt.datetime, end: dt.datetime,
                    token: str | None) -> tuple[Page, int]:
        """One page, retried; returns it and the requests spent.

        Raises:
            FetchError: Refused, or still failing after the attempts.
        """
        policy = self.policy
        for attempt in range(1, policy.attempts + 1):
            await self.limiter.acquire()
            try:
                page = await anyio.to_thread.run_sync(
                    partial(self.source.page, symbol, start, end, token), abandon_on_cancel=True
                )
            except DataSourceUnavailable as exc:
                if attempt == policy.attempts:
                    raise FetchError(f"{symbol}: the data API kept failing ({exc}); gave up "
                                     f"after {attempt} attempts: rerun to resume") from exc
                pause = min(policy.backoff_max_s, policy.backoff_s * 2 ** (attempt - 1))
                pause *= self.rng.uniform(0.5, 1.0)
                if exc.retry_after_s is not None:
                    pause = min(policy.backoff_max_s, max(pause, exc.retry_after_s))
                log.warning("fetch.retry", symbol=symbol, attempt=attempt, error=str(exc),
                            pause_s=round(pause, 3))
                if self.on_retry is not None:
                    self.on_retry(symbol, attempt, str(exc))
                await self.sleep(pause)
            else:
                return page, attempt
        raise AssertionError("unreachable")  # pragma: no cover

    def _commit(self, files: _Files, m: Manifest, rows: list[tuple[int, str]]) -> Manifest:
        """Append rows, fsync, then record them in the manifest (in a worker thread)."""
        if not rows:
            return m
        size = _fsync_append(files.part, "".join(line for _, line in rows).encode())
        last = rows[-1][0]
        m = msgspec.structs.replace(m, rows=m.rows + len(rows), part_bytes=size,
                                    last_close=format_ts(last), last_close_ns=last)
        _write_manifest(files, m)
        return m

    def _finish(self, files: _Files, m: Manifest) -> Manifest:
        """Sidecar first, then the data file, then the manifest says so.

        A range reaching today is recorded as ending yesterday, so that a
        rerun fetches the rest of today instead of calling it up to date.
        """
        yesterday = dt.datetime.now(calendar.NEW_YORK).date() - dt.timedelta(days=1)
        m = msgspec.structs.replace(m, end=min(m.end, yesterday.isoformat()))
        write_meta(files.csv, Meta(symbol=m.symbol, timeframe=m.timeframe,
                                   adjustment=m.adjustment, feed=m.feed, start=m.start,
                                   end=m.end, extended_hours=m.extended_hours))
        os.replace(files.part, files.csv)
        m = msgspec.structs.replace(m, complete=True)
        _write_manifest(files, m)
        return m

    async def symbol(self, symbol: str) -> FetchResult:
        """Fetch (or continue fetching) one symbol."""
        files = _Files(self.out, symbol)
        resumed = await anyio.to_thread.run_sync(self._prepare, files, symbol)
        if resumed is None:
            done = _read_manifest(files.manifest)
            return FetchResult(symbol=symbol, path=str(files.csv), added=0, requests=0,
                               rows=done.rows if done is not None else 0, up_to_date=True)
        m = resumed
        window_start = _ny_midnight(dt.date.fromisoformat(m.start))
        start = window_start
        if m.last_close_ns is not None:
            start = max(start, _EPOCH + dt.timedelta(microseconds=m.last_close_ns // 1000))
        # Alpaca's end is inclusive on the bar start: the last second of the end date.
        end = _ny_midnight(dt.date.fromisoformat(m.end) + dt.timedelta(days=1))
        end -= dt.timedelta(seconds=1)
        token: str | None = None
        added = spent = 0
        while start <= end:
            page, tries = await self._page(symbol, start, end, token)
            spent += tries
            lines = _rows(symbol, page.bars, self.spec, m.last_close_ns, time.time_ns())
            # Not cancellable half-way: the page lands whole or not at all.
            m = await anyio.to_thread.run_sync(self._commit, files, m, lines)
            added += len(lines)
            log.debug("fetch.page", symbol=symbol, bars=len(lines), last=m.last_close)
            if self.on_page is not None:
                self.on_page(symbol, len(lines), m.last_close_ns)
            token = page.next_token
            if token is None:
                break
        m = await anyio.to_thread.run_sync(self._finish, files, m)
        log.info("fetch.done", symbol=symbol, rows=m.rows, added=added, requests=spent)
        return FetchResult(symbol=symbol, path=str(files.csv), rows=m.rows, added=added,
                           requests=spent)


def _ny_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=calendar.NEW_YORK).astimezone(dt.UTC)


async def fetch(
    spec: FetchSpec,
    out: Path | str,
    source: BarsSource,
    *,
    policy: FetchPolicy | None = None,
    limiter: RateLimiter | None = None,
    on_page: PageHook | None = None,
    on_retry: RetryHook | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> list[FetchResult]:
    """Fetch every symbol of ``spec`` into ``out/<SYMBOL>.csv``, continuing earlier runs.

    Args:
        spec: What to fetch.
        out: The output directory (created).
        source: Where pages come from (:class:`AlpacaBarsSource`).
        policy: Rate, retries and timeout; the defaults suit Alpaca's free plan.
        limiter: Shares a request budget with other callers; default one of
            ``policy.per_minute``.
        on_page: Progress callback after each page is on disk.
        on_retry: Callback before each retry pause.
        sleep: How to pause between retries.

    Returns:
        One result per symbol, in order.

    Raises:
        FetchError: A request was refused or kept failing, or existing files
            do not match ``spec``. Everything written so far stays, and a rerun
            continues from it.
        OSError: The output cannot be written.
    """
    policy = policy or FetchPolicy()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fetcher = _Fetcher(spec, out, source, policy, limiter or RateLimiter(policy.per_minute),
                       on_page, on_retry, sleep)
    return [await fetcher.symbol(symbol) for symbol in spec.symbols]
