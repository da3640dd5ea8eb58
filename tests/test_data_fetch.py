"""``trader data fetch`` against the embedded sandbox: faults, resumption, exact bars."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Iterator, MutableMapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

import anyio
import numpy as np
import pytest
from structlog.testing import capture_logs

from trader import calendar
from trader.data.bars import BarTable, load_csv
from trader.data.commands import add_data_commands
from trader.data.fetch import (
    AlpacaBarsSource,
    FetchError,
    FetchPolicy,
    FetchSpec,
    Page,
    fetch,
)
from trader.data.quality import check
from trader.data.store import check_adjustments, find_gaps, ls, read_meta
from trader.data.synth import synth_bars
from trader.errors import DataError
from trader.ratelimit import RateLimiter
from trader.sandbox import FaultConfig, Sandbox
from trader.secrets import Credentials

KEY, SECRET = "fetch-key", "fetch-secret"
CREDENTIALS = Credentials(key_id=KEY, secret_key=SECRET)
COLUMNS = ("ts_ns", "open", "high", "low", "close", "volume", "vwap", "trades")
FAST = FetchPolicy(backoff_s=0.0, backoff_max_s=0.0, attempts=4, timeout_s=5.0)
WAIT_S = 20.0



@pytest.fixture(autouse=True)
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """The structlog events of the test (and none on whatever stream was configured last)."""
    with capture_logs() as captured:
        yield captured


@cache
def minute_tables() -> dict[str, BarTable]:
    """Two symbols, three sessions of 1-minute bars (2,340 bars)."""
    return synth_bars(["AAPL", "MSFT"], days=3, freq="1min", seed=11, start=dt.date(2024, 3, 6))


@cache
def daily_tables() -> dict[str, BarTable]:
    """Two symbols, 40 daily sessions over the Thanksgiving early close."""
    return synth_bars(["AAPL", "MSFT"], days=40, freq="1d", seed=5, start=dt.date(2023, 11, 1))


def _sandbox(tables: dict[str, BarTable], **kw: Any) -> Sandbox:
    return Sandbox(tables, key_id=KEY, secret=SECRET, speed="max", **kw)


async def _publish_all(sb: Sandbox, tables: dict[str, BarTable]) -> None:
    """Move the sandbox clock past the last bar: all of it is history now."""
    await sb.market.advance(until_ns=max(int(t.ts_ns[-1]) for t in tables.values()))


def _spec(tables: dict[str, BarTable], timeframe: Literal["1Min", "1Day"], **kw: Any) -> FetchSpec:
    first = min(int(t.ts_ns[0]) for t in tables.values())
    last = max(int(t.ts_ns[-1]) for t in tables.values())

    def day(ns: int) -> dt.date:
        return dt.datetime.fromtimestamp(ns // 10**9, calendar.NEW_YORK).date()

    fields: dict[str, Any] = {"symbols": tuple(tables), "start": day(first), "end": day(last),
                              "timeframe": timeframe}
    return FetchSpec(**(fields | kw))


def _assert_same_bars(path: Path, expected: BarTable) -> None:
    """The file holds exactly the expected bars: same times, same values, nothing else."""
    tables, report = load_csv(path, on_bad_row="error", cache_dir=path.parent / ".cache")
    assert report.rows_skipped == 0
    got = tables[expected.symbol]
    assert len(got) == len(expected)
    for name in COLUMNS:
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [429, 500, 504])
async def test_fetch_gets_exactly_the_sandbox_bars_through_an_error_burst(
    tmp_path: Path, status: Literal[429, 500, 504], logs: list[MutableMapping[str, Any]]
) -> None:
    """Two failed requests are retried and every page lands once: the files equal the tape."""
    tables = minute_tables()
    faults = FaultConfig(rest_error_status=status, rest_error_count=2)
    retries: list[tuple[str, int, str]] = []
    pages: list[int] = []
    async with _sandbox(tables, faults=faults, bars_page_limit=500) as sb:
        await _publish_all(sb, tables)
        spec = _spec(tables, "1Min")
        source = AlpacaBarsSource(CREDENTIALS, spec, url=sb.base_url, timeout_s=5.0)
        with anyio.fail_after(WAIT_S):
            results = await fetch(
                spec, tmp_path, source, policy=FAST,
                on_page=lambda s, n, last: pages.append(n),
                on_retry=lambda s, attempt, err: retries.append((s, attempt, err)),
            )
    assert [(s, a) for s, a, _ in retries] == [("AAPL", 1), ("AAPL", 2)]
    events = [(e["event"], e["symbol"]) for e in logs if e["log_level"] != "debug"]
    assert events == [("fetch.retry", "AAPL"), ("fetch.retry", "AAPL"), ("fetch.done", "AAPL"),
                      ("fetch.done", "MSFT")]
    assert all(f"HTTP {status}" in err for _, _, err in retries)
    assert [r.symbol for r in results] == ["AAPL", "MSFT"]
    assert results[0].requests == -(-len(tables["AAPL"]) // 500) + 2  # pages + the failures
    for symbol, table in tables.items():
        _assert_same_bars(tmp_path / f"{symbol}.csv", table)
        assert not find_gaps(table.ts_ns, 1).off_grid.size
        assert not (tmp_path / f"{symbol}.csv.part").exists()
        meta = read_meta(tmp_path / f"{symbol}.csv")
        assert meta is not None
        assert (meta.timeframe, meta.adjustment, meta.feed) == ("1Min", "raw", "iex")
    assert sum(pages) == sum(len(t) for t in tables.values())


@pytest.mark.asyncio
async def test_a_request_that_times_out_is_retried(tmp_path: Path) -> None:
    """A request with no answer within the timeout (a dead connection) is retried."""
    tables = daily_tables()
    retries: list[str] = []
    async with _sandbox(tables, faults=FaultConfig(delay_s=0.6)) as sb:
        await _publish_all(sb, tables)
        spec = _spec(tables, "1Day", symbols=("AAPL",))
        source = AlpacaBarsSource(CREDENTIALS, spec, url=sb.base_url, timeout_s=0.2)

        def on_retry(symbol: str, attempt: int, error: str) -> None:
            retries.append(error)
            sb.faults.update({"delay_s": 0.0})  # the connection "comes back"

        with anyio.fail_after(WAIT_S):
            await fetch(spec, tmp_path, source, policy=FAST, on_retry=on_retry)
    assert len(retries) == 1
    assert "Timeout" in retries[0]
    _assert_same_bars(tmp_path / "AAPL.csv", tables["AAPL"])


@pytest.mark.asyncio
async def test_a_fetch_that_keeps_failing_gives_up_with_fetch_error(tmp_path: Path) -> None:
    """After the attempts are spent the fetch raises FetchError, keeping what it wrote."""
    tables = daily_tables()
    async with _sandbox(tables, faults=FaultConfig(rest_error_status=500,
                                                   rest_error_count=10)) as sb:
        await _publish_all(sb, tables)
        spec = _spec(tables, "1Day", symbols=("AAPL",))
        source = AlpacaBarsSource(CREDENTIALS, spec, url=sb.base_url)
        with anyio.fail_after(WAIT_S), pytest.raises(FetchError, match="gave up after 4"):
            await fetch(spec, tmp_path, source, policy=FAST)
    manifest = json.loads((tmp_path / ".fetch-AAPL.json").read_text())
    assert manifest["rows"] == 0
    assert not manifest["complete"]


@pytest.mark.asyncio
async def test_a_429_waits_for_the_rate_limit_reset_within_the_cap(tmp_path: Path) -> None:
    """The sandbox's 429 says the budget resets in 60 s; the pause is that, capped."""
    tables = daily_tables()
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    async with _sandbox(tables, faults=FaultConfig(rest_error_status=429,
                                                   rest_error_count=1)) as sb:
        await _publish_all(sb, tables)
        spec = _spec(tables, "1Day", symbols=("AAPL",))
        source = AlpacaBarsSource(CREDENTIALS, spec, url=sb.base_url)
        policy = FetchPolicy(backoff_s=0.0, backoff_max_s=30.0)
        with anyio.fail_after(WAIT_S):
            await fetch(spec, tmp_path, source, policy=policy, sleep=sleep)
    assert pauses == [30.0]
    _assert_same_bars(tmp_path / "AAPL.csv", tables["AAPL"])


@pytest.mark.asyncio
async def test_requests_stay_within_the_per_minute_budget(tmp_path: Path) -> None:
    """With a budget of 2 a minute, the third page waits until the first grant is 60 s old."""
    now = [0.0]
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds
        await anyio.lowlevel.checkpoint()

    limiter = RateLimiter(2, clock=lambda: now[0], sleep=fake_sleep)
    pages = [Page([_bar(f"2024-03-06T{h}:00:00Z")], token)
             for h, token in (("15", "p2"), ("16", "p3"), ("17", None))]
    source = _ScriptedSource(pages)
    spec = FetchSpec(symbols=("X",), start=dt.date(2024, 3, 6), end=dt.date(2024, 3, 6),
                     timeframe="1Hour")
    with anyio.fail_after(WAIT_S):
        await fetch(spec, tmp_path, source, policy=FAST, limiter=limiter)
    assert [token for _, _, token in source.calls] == [None, "p2", "p3"]
    assert waits == [60.0]
    assert len((tmp_path / "X.csv").read_text().splitlines()) == 4


@pytest.mark.asyncio
async def test_wrong_keys_are_a_definite_refusal_not_retried(tmp_path: Path) -> None:
    """A 401 is not transient: FetchError at once, naming the status."""
    tables = daily_tables()
    retries: list[str] = []
    async with _sandbox(tables) as sb:
        await _publish_all(sb, tables)
        spec = _spec(tables, "1Day", symbols=("AAPL",))
        wrong = Credentials(key_id=KEY, secret_key="not-the-secret")
        source = AlpacaBarsSource(wrong, spec, url=sb.base_url)
        with anyio.fail_after(WAIT_S), pytest.raises(FetchError, match="HTTP 401"):
            await fetch(spec, tmp_path, source, policy=FAST,
                        on_retry=lambda s, a, e: retries.append(e))
    assert retries == []


class _Killed(Exception):
    """Stands in for the process dying after a page."""


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["raise", "cancel"])
async def test_an_interrupted_fetch_resumes_with_no_gap_and_no_duplicate(
    tmp_path: Path, how: str
) -> None:
    """Killed after its first page (plus a torn write), a rerun continues after the last bar."""
    tables = minute_tables()
    async with _sandbox(tables, bars_page_limit=500) as sb:
        await _publish_all(sb, tables)
        spec = _spec(tables, "1Min")
        source = AlpacaBarsSource(CREDENTIALS, spec, url=sb.base_url)
        with anyio.fail_after(WAIT_S), anyio.CancelScope() as scope:

            def die(symbol: str, added: int, last: int | None) -> None:
                if how == "cancel":
                    scope.cancel()
                else:
                    raise _Killed

            if how == "raise":
                with pytest.raises(_Killed):
                    await fetch(spec, tmp_path, source, policy=FAST, on_page=die)
            else:
                await fetch(spec, tmp_path, source, policy=FAST, on_page=die)
        manifest = json.loads((tmp_path / ".fetch-AAPL.json").read_text())
        assert (manifest["rows"], manifest["complete"]) == (500, False)
        assert not (tmp_path / "AAPL.csv").exists()
        part = tmp_path / "AAPL.csv.part"
        assert part.stat().st_size == manifest["part_bytes"]
        with part.open("ab") as fh:  # the next page, half-written when the process died
            fh.write(b"AAPL,2024-03-06T23:59:00Z,1.0,1.0,1.0,1.")
        with anyio.fail_after(WAIT_S):
            results = await fetch(spec, tmp_path, source, policy=FAST)
    assert results[0].added == len(tables["AAPL"]) - 500
    assert results[1].added == len(tables["MSFT"])
    for symbol, table in tables.items():
        _assert_same_bars(tmp_path / f"{symbol}.csv", table)


@pytest.mark.asyncio
async def test_a_later_end_extends_a_complete_file_with_only_the_new_bars(tmp_path: Path) -> None:
    """Fetched up to the sandbox's clock, then rerun later: the file grows by the new bars."""
    tables = daily_tables()
    table = tables["AAPL"]
    cut = int(table.ts_ns[19])  # history ends at the 20th session's close for now
    async with _sandbox(tables) as sb:
        await sb.market.advance(until_ns=cut)
        spec = _spec(tables, "1Day", symbols=("AAPL",))
        source = AlpacaBarsSource(CREDENTIALS, spec, url=sb.base_url)
        first_end = dt.datetime.fromtimestamp(cut // 10**9, calendar.NEW_YORK).date()
        with anyio.fail_after(WAIT_S):
            await fetch(FetchSpec(symbols=("AAPL",), start=spec.start, end=first_end),
                        tmp_path, source, policy=FAST)
            again = await fetch(FetchSpec(symbols=("AAPL",), start=spec.start, end=first_end),
                                tmp_path, source, policy=FAST)
            assert again[0].up_to_date
            assert again[0].requests == 0
            await _publish_all(sb, tables)
            later = await fetch(spec, tmp_path, source, policy=FAST)
    assert later[0].added == len(table) - 20
    _assert_same_bars(tmp_path / "AAPL.csv", table)


@pytest.mark.asyncio
async def test_daily_bars_are_stamped_at_the_session_close_including_early_closes(
    tmp_path: Path,
) -> None:
    """Alpaca's midnight ``t`` becomes the session close; the day after Thanksgiving, 13:00."""
    tables = daily_tables()
    async with _sandbox(tables) as sb:
        await _publish_all(sb, tables)
        spec = _spec(tables, "1Day", symbols=("MSFT",))
        source = AlpacaBarsSource(CREDENTIALS, spec, url=sb.base_url)
        with anyio.fail_after(WAIT_S):
            await fetch(spec, tmp_path, source, policy=FAST)
    text = (tmp_path / "MSFT.csv").read_text()
    assert "MSFT,2023-11-24T18:00:00Z," in text  # 13:00 New York
    assert "MSFT,2023-11-22T21:00:00Z," in text  # 16:00 New York
    _assert_same_bars(tmp_path / "MSFT.csv", tables["MSFT"])


class _ScriptedSource:
    """A BarsSource answering from a script of pages (no network)."""

    def __init__(self, pages: list[Page]) -> None:
        self.pages = pages
        self.calls: list[tuple[dt.datetime, dt.datetime, str | None]] = []

    def page(self, symbol: str, start: dt.datetime, end: dt.datetime, token: str | None) -> Page:
        self.calls.append((start, end, token))
        return self.pages[len(self.calls) - 1]


def _bar(t: str, price: float = 10.0) -> dict[str, Any]:
    return {"t": t, "o": price, "h": price, "l": price, "c": price, "v": 100, "n": 3,
            "vw": price}


@pytest.mark.asyncio
async def test_intraday_bars_keep_the_regular_session_unless_extended_hours(
    tmp_path: Path,
) -> None:
    """A 1-minute bar starting 09:29 New York is pre-market; 15:59 closes at 16:00 and stays."""
    bars = [_bar("2024-03-06T14:29:00Z"), _bar("2024-03-06T14:30:00Z"),
            _bar("2024-03-06T20:59:00Z"), _bar("2024-03-06T21:00:00Z")]
    spec = FetchSpec(symbols=("X",), start=dt.date(2024, 3, 6), end=dt.date(2024, 3, 6),
                     timeframe="1Min")
    regular = _ScriptedSource([Page(bars, None)])
    await fetch(spec, tmp_path / "regular", regular, policy=FAST)
    lines = (tmp_path / "regular" / "X.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in lines[1:]] == ["2024-03-06T14:31:00Z",
                                                          "2024-03-06T21:00:00Z"]
    # The request covers the whole New York day: midnight to the last second.
    start, end, _ = regular.calls[0]
    assert (start.isoformat(), end.isoformat()) == ("2024-03-06T05:00:00+00:00",
                                                    "2024-03-07T04:59:59+00:00")
    extended = FetchSpec(symbols=("X",), start=spec.start, end=spec.end, timeframe="1Min",
                         extended_hours=True)
    await fetch(extended, tmp_path / "ext", _ScriptedSource([Page(bars, None)]), policy=FAST)
    assert len((tmp_path / "ext" / "X.csv").read_text().splitlines()) == 5
    # The checker takes the sidecar's word that bars outside the session belong.
    assert "off_calendar" not in check(tmp_path / "ext").counts
    (tmp_path / "ext" / "X.meta.json").unlink()
    assert check(tmp_path / "ext").counts["off_calendar"] == 2


@pytest.mark.asyncio
async def test_existing_files_with_other_settings_or_no_manifest_are_refused(
    tmp_path: Path,
) -> None:
    """Another adjustment in the same folder, or a CSV the fetch did not write, is an error."""
    spec = FetchSpec(symbols=("X",), start=dt.date(2024, 3, 6), end=dt.date(2024, 3, 6))
    await fetch(spec, tmp_path, _ScriptedSource([Page([_bar("2024-03-06T05:00:00Z")], None)]))
    split = FetchSpec(symbols=("X",), start=spec.start, end=spec.end, adjustment="split")
    with pytest.raises(FetchError, match="refusing to mix"):
        await fetch(split, tmp_path, _ScriptedSource([]))
    (tmp_path / "Y.csv").write_text("symbol,ts,open,high,low,close,volume\n")
    with pytest.raises(FetchError, match="not written by trader data fetch"):
        await fetch(FetchSpec(symbols=("Y",), start=spec.start, end=spec.end), tmp_path,
                    _ScriptedSource([]))


@pytest.mark.asyncio
async def test_a_tree_mixing_adjustments_for_one_symbol_is_refused(tmp_path: Path) -> None:
    """Raw and split-adjusted files of one symbol in one tree: check_adjustments and ls refuse."""
    page = [Page([_bar("2024-03-06T05:00:00Z")], None)]
    day = dt.date(2024, 3, 6)
    await fetch(FetchSpec(symbols=("X",), start=day, end=day), tmp_path / "a",
                _ScriptedSource(list(page)))
    check_adjustments(tmp_path)  # one file: fine
    await fetch(FetchSpec(symbols=("X",), start=day, end=day, adjustment="split"),
                tmp_path / "b", _ScriptedSource(list(page)))
    with pytest.raises(DataError, match="X has files with different adjustments"):
        check_adjustments(tmp_path)
    with pytest.raises(DataError, match="different adjustments"):
        ls(tmp_path)
    assert [x.adjustment for x in ls(tmp_path / "b")] == ["split"]


@pytest.mark.asyncio
async def test_cli_fetch_writes_the_files_and_reports_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``trader data fetch`` with keys from the environment and --data-url exits 0."""
    tables = daily_tables()
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    parser = argparse.ArgumentParser(prog="trader")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    async with _sandbox(tables) as sb:
        await _publish_all(sb, tables)
        args = parser.parse_args([
            "data", "fetch", "--symbols", "AAPL,MSFT", "--start", "2023-11-01",
            "--end", "2023-12-31", "--timeframe", "1Day", "--adjustment", "split",
            "--out", str(tmp_path), "--data-url", sb.base_url,
        ])
        with anyio.fail_after(WAIT_S):
            # The command runs its own event loop, so in a thread while ours serves.
            code = await anyio.to_thread.run_sync(args.handler, args)
    assert code == 0
    out = capsys.readouterr().out
    assert f"AAPL: {len(tables['AAPL'])} bars" in out
    for symbol, table in tables.items():
        _assert_same_bars(tmp_path / f"{symbol}.csv", table)
    assert {x.adjustment for x in ls(tmp_path)} == {"split"}
