"""The sandbox server: one aiohttp application on one port, and :class:`Sandbox` to embed it.

Routes (alpaca-py's ``url_override`` targets)::

    /v2/account /v2/clock /v2/calendar /v2/assets /v2/orders /v2/positions   trading REST
    /v2/stocks/bars  /v2/stocks/{symbol}/bars  /v2/stocks/bars/latest        data REST
    /v2/iex  /v2/sip  /v2/test                                               data websocket
    /stream                                                                  trade updates
    /admin/...                                                               sandbox control

REST requests must carry ``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY`` matching
the configured pair (or HTTP Basic with the same pair, as the data clients'
``use_basic_auth`` sends); anything else, a wrong secret included, is
``401 {"code": 40110000, "message": "request is not authorized"}``.

Embedding::

    async with Sandbox("replay_data/1Day", speed="max") as sandbox:
        client = TradingClient("sandbox-key", "sandbox-secret", url_override=sandbox.base_url)
        await sandbox.market.advance(bars=1)

or ``await task_group.start(sandbox.run)`` to serve until cancelled.

What it is not: a production server. It binds 127.0.0.1 by default and the
admin API has no authentication.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal

import anyio
import structlog
from aiohttp import web
from anyio.abc import TaskStatus

from trader.brokers.simulated import Exchange
from trader.config import BrokerConfig
from trader.data.bars import BarTable
from trader.messages import BarClosed
from trader.sandbox import wire
from trader.sandbox.account import AccountApi
from trader.sandbox.admin import AdminApi
from trader.sandbox.connection import Credentials
from trader.sandbox.data_stream import data_stream
from trader.sandbox.faults import REST_ERROR_BODIES, FaultConfig, Faults
from trader.sandbox.history import HistoryApi
from trader.sandbox.hub import Hub
from trader.sandbox.market import Market, Speed
from trader.sandbox.orders import OrdersApi
from trader.sandbox.params import RequestError, error_response
from trader.sandbox.tape import Tape
from trader.sandbox.trade_stream import trade_stream

log = structlog.get_logger("trader.sandbox")

DataSource = str | Path | Tape | Mapping[str, BarTable] | Iterable[BarClosed]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_SHUTDOWN_TIMEOUT_S = 3.0
_REST_PREFIXES = ("/v2/", "/v1beta3/")


def make_app(
    market: Market,
    faults: Faults,
    hub: Hub,
    credentials: Credentials,
    *,
    bars_page_limit: int = 10_000,
) -> web.Application:
    """Build the aiohttp application over a market (no socket yet)."""
    app = web.Application(middlewares=[_guard(faults, credentials)])
    app.add_routes(AdminApi(market, faults, hub).routes())
    app.add_routes(HistoryApi(market, bars_page_limit).routes())

    async def data_ws(request: web.Request) -> web.StreamResponse:
        return await data_stream(request, hub)

    async def trade_ws(request: web.Request) -> web.StreamResponse:
        return await trade_stream(request, hub)

    # Registered before the trading routes: none of these paths collide, but
    # the websocket routes must never fall into a REST handler.
    app.add_routes([web.get(r"/v2/{feed:iex|sip|test}", data_ws), web.get("/stream", trade_ws)])
    app.add_routes(AccountApi(market, faults, credentials.key_id).routes())
    app.add_routes(OrdersApi(market).routes())

    async def on_shutdown(_: web.Application) -> None:
        await hub.close_all()

    app.on_shutdown.append(on_shutdown)
    if market.speed != "max":
        app.cleanup_ctx.append(_clock_task(market))
    return app


def _clock_task(market: Market) -> Callable[[web.Application], AsyncIterator[None]]:
    """The wall-time clock as a task the application owns: started with the
    server, cancelled and awaited at cleanup (aiohttp's background-task idiom,
    so the embedding caller's own code never runs inside a task group)."""

    async def clock(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(market.run(), name="sandbox-clock")
        task.add_done_callback(_log_crash)
        yield
        task.cancel()
        # asyncio.wait lets a cancellation of *this* cleanup propagate, where
        # suppressing CancelledError around ``await task`` would swallow it.
        await asyncio.wait([task])
        if not task.cancelled() and (crash := task.exception()) is not None:
            raise crash  # the clock died earlier: surface it at shutdown

    return clock


def _guard(
    faults: Faults, credentials: Credentials
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """REST faults, then authentication, then Alpaca-shaped errors (REST paths only)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(_REST_PREFIXES) or _is_upgrade(request):
            try:
                return await handler(request)
            except RequestError as exc:
                return error_response(exc.status, exc.code, exc.message)
        delay = faults.config.delay_s
        if delay:
            await anyio.sleep(delay)
        status = faults.rest_error()
        if status is not None:
            code, message = REST_ERROR_BODIES[status]
            headers = _rate_limit_headers() if status == 429 else None
            return error_response(status, code, message, headers)
        if faults.config.refuse_auth or not _authorized(request, credentials):
            return error_response(401, 40110000, "request is not authorized")
        try:
            return await handler(request)
        except RequestError as exc:
            return error_response(exc.status, exc.code, exc.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, exc.status * 100_000, exc.reason.lower())

    return guard


def _is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _authorized(request: web.Request, credentials: Credentials) -> bool:
    key = request.headers.get("APCA-API-KEY-ID")
    secret = request.headers.get("APCA-API-SECRET-KEY")
    auth = request.headers.get("Authorization", "")
    if key is None and auth.lower().startswith("basic "):
        try:
            key, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
    return credentials.check(key, secret)


def _rate_limit_headers() -> dict[str, str]:
    reset = int(dt.datetime.now(dt.UTC).timestamp()) + 60
    return {
        "X-Ratelimit-Limit": "200",
        "X-Ratelimit-Remaining": "0",
        "X-Ratelimit-Reset": str(reset),
    }


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sandbox.clock_crashed", exc_info=task.exception())


class Sandbox:
    """A local Alpaca-compatible exchange; an async context manager.

    Args:
        data: a directory of bar CSVs, a :class:`Tape`, tables per symbol, or
            bar messages.
        host: where to bind (default 127.0.0.1).
        port: TCP port; 0 picks a free one (read :attr:`port` after start).
        key_id: the one accepted API key id.
        secret: its secret.
        speed: wall-time multiplier, or ``"max"`` for a clock moved only by
            ``market.advance`` / ``POST /admin/advance``.
        start: the starting sandbox time (UTC ns, aware datetime, RFC 3339 or
            a date meaning midnight New York); default the first bar's start.
        broker: fill, commission and cash rules (as replay's ``[broker]``).
        faults: the starting fault switches.
        auth_timeout_s: how long a data-stream client may take to authenticate.
        trade_frames: frame type for trade updates (``binary`` like the paper server).
        bars_page_limit: the most bars per historical page (Alpaca: 10000).

    Raises:
        trader.errors.DataError: the data directory cannot be loaded.
        ValueError: a bad speed or start.
    """

    def __init__(
        self,
        data: DataSource = "replay_data/1Day",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        key_id: str = "sandbox-key",
        secret: str = "sandbox-secret",
        speed: Speed = "max",
        start: int | dt.datetime | str | None = None,
        broker: BrokerConfig | None = None,
        faults: FaultConfig | None = None,
        auth_timeout_s: float = 10.0,
        trade_frames: Literal["binary", "text"] = "binary",
        bars_page_limit: int = 10_000,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.tape = _tape(data)
        self.exchange = Exchange(broker or BrokerConfig())
        self.market = Market(self.tape, self.exchange, speed=speed, start_ns=_start_ns(start))
        self.faults = Faults(faults)
        self.credentials = Credentials(key_id, secret)
        self.hub = Hub(
            self.market,
            self.faults,
            self.credentials,
            auth_timeout_s=auth_timeout_s,
            trade_binary=trade_frames == "binary",
        )
        self.app = make_app(
            self.market, self.faults, self.hub, self.credentials, bars_page_limit=bars_page_limit
        )
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # --- addresses -----------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the sandbox is not serving")
        return self._port

    @property
    def base_url(self) -> str:
        """REST base for ``url_override`` (trading and data clients)."""
        return f"http://{self.host}:{self.port}"

    @property
    def data_ws_url(self) -> str:
        """The stock data stream (``/v2/iex``) for ``StockDataStream(url_override=...)``."""
        return f"ws://{self.host}:{self.port}/v2/iex"

    @property
    def trade_ws_url(self) -> str:
        """The trade-updates stream for ``TradingStream(url_override=...)``."""
        return f"ws://{self.host}:{self.port}/stream"

    # --- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> Sandbox:
        runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
            raise
        self._port = int(runner.addresses[0][1])
        self._runner = runner
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        runner, self._runner = self._runner, None
        # Shielded and bounded: stops the clock, closes every websocket, then
        # the listener, even when the caller is being cancelled.
        with anyio.move_on_after(_SHUTDOWN_TIMEOUT_S + 2, shield=True):
            if runner is not None:
                await runner.cleanup()
        self._port = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started()`` once the port is bound."""
        async with self:
            task_status.started()
            await anyio.sleep_forever()

    def drop_connections(self) -> int:
        """Cut every websocket now (the "drop now" fault); returns how many."""
        return self.hub.drop_all()


def _tape(data: DataSource) -> Tape:
    if isinstance(data, Tape):
        return data
    if isinstance(data, str | Path):
        return Tape.from_dir(data)
    if isinstance(data, Mapping):
        return Tape(data)
    return Tape.from_bars(data)


def _start_ns(start: int | dt.datetime | str | None) -> int | None:
    if start is None or isinstance(start, int):
        return start
    if isinstance(start, dt.datetime):
        return wire.from_datetime(start)
    return wire.parse_time(start)
