"""The Alpaca adapter: the broker port over alpaca-py's REST client and the trade stream.

REST goes through alpaca-py's ``TradingClient``, which is synchronous and has
no timeout. Every call therefore runs in a worker thread under our own
deadline, after taking a token from the :class:`~trader.ratelimit.RateLimiter`
(cancels first). alpaca-py's own 3-second retry sleeps are switched off; we
retry here with jittered exponential backoff and a bounded attempt count.

Errors: 429, 5xx, timeouts and connection failures are transient (retried,
then :class:`~trader.errors.BrokerUnavailable`); any other 4xx is a definite
:class:`~trader.errors.BrokerRejected` carrying Alpaca's message, code and
HTTP status. A submit that failed in a way that may have reached the broker
(timeout, 5xx, dropped connection) is never simply resent: the order is first
looked up by client order id, and a resend answered "client_order_id must be
unique" means the first one landed. So one intended order is one order.

Order events come from the trade-updates websocket (``stream``), never from
REST responses. The stream can drop or stall, so it is backed by polling:
an order with no update for ``update_timeout_s`` (or while the stream is
down, and all live orders right after a reconnect) is read by client order
id and the events its state implies are emitted. Both paths feed one ledger
per order (:class:`~trader.brokers.alpaca_orders.Orders`), which emits each
execution once: by execution id for stream fills, and by cumulative filled
quantity for polled state (polled fills get an execution id derived from the
order id and that quantity). A stream that starts (first start, or after the execution actor
restarted) takes the broker's open orders as its baseline and emits nothing
for what happened before, because the actor reconciles to that same state.
Life of an order here::

    submit ─▶ tracked ─▶ OrderAccepted ─▶ OrderFilled* ─▶ filled | canceled |
    (REST)    (polled if    (stream "new"    (stream or        expired | replaced
              silent)        or poll)         poll deltas)     | rejected  (done)

Health (:mod:`trader.brokers.health`): every REST outcome, every trade
update and the broker's clock (``/v2/clock``, at start and every
``clock_check_interval_s``) are measured against the ``[alpaca]`` limits; a
check that flips goes out on ``updates`` as a ``BrokerHealthChanged``, which
the execution actor passes to risk.

What it is not: market data (the feed's job), order state policy (the
execution actor's) or breaker policy (risk's). Nothing secret is logged:
client order ids and symbols are.
"""

from __future__ import annotations

import math
import os
import random
import warnings
from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import Any

import anyio
import msgspec
import requests
import structlog
from anyio.abc import TaskStatus
from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from trader.brokers.alpaca_orders import Orders
from trader.brokers.alpaca_wire import (
    WireAccount,
    WireClock,
    WireOrder,
    WirePosition,
    cents_of,
    control_decoder,
    convert_payload,
    envelope_decoder,
    json_encoder,
    order_request,
    order_state,
    parse_ts,
    update_decoder,
)
from trader.brokers.base import AccountState, OrderState, PositionState
from trader.brokers.health import BrokerHealth, HealthChange
from trader.channels import Channel
from trader.config import AlpacaConfig
from trader.errors import BrokerError, BrokerRejected, BrokerUnavailable
from trader.messages import (
    BrokerHealthChanged,
    Message,
    OrderEvent,
    SubmitOrder,
)
from trader.ratelimit import Priority, RateLimiter
from trader.secrets import Credentials

with warnings.catch_warnings():
    # alpaca.trading imports its own websockets.legacy stream client, which
    # warns on import; we use only the REST client.
    warnings.filterwarnings("ignore", "websockets.legacy", DeprecationWarning)
    from alpaca.common.exceptions import APIError
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import QueryOrderStatus
    from alpaca.trading.requests import (
        GetOrdersRequest,
    )

log = structlog.get_logger("trader.brokers.alpaca")

_DUPLICATE = "40010001"
_CLOSE_S = 3.0
_OPEN_ORDERS_LIMIT = 500  # Alpaca's maximum page
_LIST_SYMBOLS_MAX = 100  # symbols named in one orders query


class _Transient(Exception):
    """A failure worth retrying. ``status`` is None when no HTTP answer came."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class _SocketTimeout(HTTPAdapter):
    """An HTTP adapter that gives every request a socket timeout."""

    def __init__(self, timeout_s: float, pool_maxsize: int) -> None:
        super().__init__(pool_maxsize=pool_maxsize)
        self._timeout_s = timeout_s

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout_s
        return super().send(request, *args, **kwargs)


class _StreamRefused(Exception):
    """The trade stream refused our keys."""


def _api_error(exc: APIError, what: str) -> Exception:
    status = exc.status_code
    # .code/.message parse the body on every access and raise on anything
    # that is not a JSON object with those keys (a proxy's HTML page, say).
    try:
        code = str(exc.code)
    except (ValueError, KeyError, TypeError):
        code = ""
    try:
        message = str(exc.message)
    except (ValueError, KeyError, TypeError):
        message = str(exc)[:200] or f"HTTP {status}"
    if status is None or status in (408, 429) or status >= 500:
        return _Transient(f"{what}: HTTP {status} {message}", status)
    return BrokerRejected(message, code=code, status=status)


# --- the adapter -----------------------------------------------------------------------


class AlpacaBroker:
    """The broker port over Alpaca (or the sandbox, which speaks its protocol).

    Args:
        updates: where order events go.
        config: ``[alpaca]``: URLs, request and update timeouts, request budget.
        credentials: the key pair (never logged).
        trading_url: REST base, overriding ``config.trading_url``.
        trade_stream_url: trade-updates websocket, overriding ``config.trade_stream_url``.
        now_ns: the graph clock, for events the broker gives no time for.
        attempts: tries per request before BrokerUnavailable (default 5).
        backoff_s: first retry delay; doubles per attempt, jittered (default 0.25).
        backoff_max_s: the longest retry delay (default 4).
        reconnect_initial_s, reconnect_max_s: trade-stream reconnect backoff bounds.
    """

    durable_updates = True  # the broker outlives us: journal fills before acting

    def __init__(
        self,
        *,
        updates: Channel[Message],
        config: AlpacaConfig,
        credentials: Credentials,
        trading_url: str | None = None,
        trade_stream_url: str | None = None,
        now_ns: Callable[[], int],
        attempts: int = 5,
        backoff_s: float = 0.25,
        backoff_max_s: float = 4.0,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.updates = updates
        self._config = config
        self._credentials = credentials
        self._stream_url = trade_stream_url or config.trade_stream_url
        self._now_ns = now_ns
        self._attempts = max(attempts, 1)
        self._backoff = (backoff_s, backoff_max_s)
        self._reconnect = (reconnect_initial_s, reconnect_max_s)
        self._limiter = RateLimiter(config.max_requests_per_minute)
        self._orders = Orders(config.update_timeout_s, now_ns)
        self._health = BrokerHealth.from_config(config)
        self._health_out: list[HealthChange] = []
        self._health_wake = anyio.Event()
        self._emit_lock = anyio.Lock()
        self._wake = anyio.Event()
        self._rng = random.Random()
        self.reconnects = 0
        """Trade-stream reconnections so far (for metrics)."""
        base_url = trading_url or config.trading_url
        client = TradingClient(
            credentials.key_id, credentials.secret_key, raw_data=True, url_override=base_url,
        )
        # alpaca-py would sleep 3 s per 429/504 inside our worker thread, past
        # our deadline; we retry ourselves.
        client._retry = 0
        client._retry_wait = 0
        client._retry_codes = []
        # A socket timeout as a backstop behind our deadline, so a worker thread
        # abandoned at the deadline cannot hang on a dead connection forever.
        # Keep-alive connections for every request that can be in flight at
        # once (concurrent submits, the polls before a bar, the poll loop and
        # the clock), so none is opened afresh on the hot path.
        adapter = _SocketTimeout(2 * config.request_timeout_s + 1,
                                 pool_maxsize=2 * config.max_concurrent_submits + 2)
        session = client._session
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # requests re-reads the environment (proxies, NO_PROXY, ~/.netrc, the
        # CA bundle) on every request: about a millisecond each, on the order
        # path. Read it once, for the one host we talk to, and keep its answer.
        session.proxies.update(requests.utils.get_environ_proxies(base_url))
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle:
            session.verify = ca_bundle
        session.trust_env = False
        self._client = client

    # --- REST plumbing ---------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[..., object], *args: Any,
                    priority: Priority = "normal") -> object:
        """One request: a rate token, a worker thread, our deadline.

        Raises:
            _Transient: timeout, connection failure, 429 or 5xx.
            BrokerRejected: any other error answer.
        """
        await self._limiter.acquire(priority)
        try:
            with anyio.fail_after(self._config.request_timeout_s):
                # abandon_on_cancel: a hung socket must not hold up our deadline;
                # the thread finishes (or fails) on its own, into the void.
                result = await anyio.to_thread.run_sync(partial(fn, *args),
                                                        abandon_on_cancel=True)
        except TimeoutError as exc:
            self._answered(failed=True)
            raise _Transient(f"{what}: no answer in {self._config.request_timeout_s}s",
                             None) from exc
        except APIError as exc:
            error = _api_error(exc, what)
            # A refusal about the order (404, 403, 422) is an answer; no
            # answer, a throttle or refused keys mean the broker is failing us.
            self._answered(failed=isinstance(error, _Transient) or exc.status_code == 401)
            raise error from exc
        except requests.RequestException as exc:
            self._answered(failed=True)
            raise _Transient(f"{what}: {type(exc).__name__}: {exc}", None) from exc
        self._answered(failed=False)
        return result

    def _answered(self, *, failed: bool) -> None:
        self._tell(self._health.request(anyio.current_time(), failed=failed))

    async def _pause(self, attempt: int) -> None:
        base, cap = self._backoff
        await anyio.sleep(min(cap, base * 2 ** (attempt - 1)) * self._rng.uniform(0.5, 1.0))

    async def _request(self, what: str, fn: Callable[..., object], *args: Any,
                       priority: Priority = "normal") -> object:
        """:meth:`_call` with retries (for requests that are safe to repeat)."""
        last: _Transient | None = None
        for attempt in range(self._attempts):
            if attempt:
                await self._pause(attempt)
            try:
                return await self._call(what, fn, *args, priority=priority)
            except _Transient as exc:
                last = exc
                log.warning("alpaca.retry", request=what, attempt=attempt + 1, error=str(exc))
        raise BrokerUnavailable(f"{last} (gave up after {self._attempts} attempts)") from last

    async def _lookup(self, coid: str, priority: Priority = "normal",
                      *, retry: bool = True) -> WireOrder | None:
        call = self._request if retry else self._call
        try:
            raw = await call("order lookup", self._client.get_order_by_client_id, coid,
                             priority=priority)
        except BrokerRejected as exc:
            if exc.status == 404:
                return None
            raise
        return convert_payload(raw, WireOrder, "order lookup")

    # --- the port: commands ----------------------------------------------------------------

    async def submit(self, order: SubmitOrder) -> None:
        """Send an order once; its events arrive on ``updates``.

        Raises:
            BrokerRejected: refused (duplicate client order id: code ``40010001``).
            BrokerUnavailable: still failing after the retries; the order may or
                may not exist (it stays watched, so its events still arrive if it does).
        """
        coid = order.client_order_id
        request = order_request(order)
        created = self._orders.expect(coid, order.symbol, anyio.current_time())
        track = self._orders.get(coid)
        if track is not None:
            track.market = order.order_type == "market"
        self._poke()
        # From here an update about it is due (the stream may beat the answer).
        self._health.sending(coid)
        uncertain = False  # an earlier attempt may have reached the broker
        last: _Transient | None = None
        for attempt in range(self._attempts):
            if attempt:
                await self._pause(attempt)
            try:
                if uncertain and await self._lookup(coid, retry=False) is not None:
                    log.info("alpaca.submit_landed", client_order_id=coid, symbol=order.symbol)
                    break
                answer = await self._call("submit", self._client.submit_order, request)
                self._note_legs(answer)
                log.info("alpaca.submitted", client_order_id=coid, symbol=order.symbol)
                break
            except _Transient as exc:
                last = exc
                uncertain = uncertain or exc.status != 429  # a 429 was refused unread
                log.warning("alpaca.retry", request="submit", client_order_id=coid,
                            attempt=attempt + 1, error=str(exc))
            except BrokerRejected as exc:
                duplicate = exc.code == _DUPLICATE and "client_order_id" in exc.reason
                if uncertain and duplicate:
                    log.info("alpaca.submit_landed", client_order_id=coid, symbol=order.symbol)
                    break
                if created:
                    # Not ours to follow: a duplicate is an order from before a
                    # restart, which reconciliation has already adopted.
                    self._orders.forget(coid)
                log.info("alpaca.rejected", client_order_id=coid, symbol=order.symbol,
                         code=exc.code, reason=exc.reason)
                self._health.answered(coid, anyio.current_time(), landed=False)
                raise
        else:
            self._health.answered(coid, anyio.current_time(), landed=False)
            raise BrokerUnavailable(
                f"submit {coid}: {last} (gave up after {self._attempts} attempts)") from last
        self._orders.submitted(coid, order.symbol, anyio.current_time())
        self._health.answered(coid, anyio.current_time(), landed=True)
        self._poke()

    def _note_legs(self, answer: object) -> None:
        """Link a bracket's legs to it from the submit's answer. The order has
        landed: an answer we cannot read only loses the link (updates and polls
        of the entry carry it again), never the order."""
        if not (isinstance(answer, dict) and answer.get("legs")):
            return
        try:
            self._orders.note_legs(convert_payload(answer, WireOrder, "submitted order"))
        except BrokerUnavailable as exc:
            log.warning("alpaca.legs_unreadable", error=str(exc))

    async def cancel(self, client_order_id: str) -> None:
        """Ask the broker to cancel; ``OrderCanceled`` arrives on ``updates``.

        Raises:
            BrokerRejected: unknown order (404) or not cancelable (422).
            BrokerUnavailable: still failing after the retries.
        """
        order = await self._lookup(client_order_id, "cancel")
        if order is None:
            raise BrokerRejected("order not found", code="40410000", status=404)
        self._health.sending(client_order_id)  # the cancel's update will be due
        landed = False
        try:
            await self._cancel(client_order_id, order)
            landed = True
        finally:
            self._health.answered(client_order_id, anyio.current_time(), landed=landed)

    async def _cancel(self, client_order_id: str, order: WireOrder) -> None:
        tried = False
        last: _Transient | None = None
        for attempt in range(self._attempts):
            if attempt:
                await self._pause(attempt)
            try:
                await self._call("cancel", self._client.cancel_order_by_id, order.id,
                                 priority="cancel")
                log.info("alpaca.cancel_sent", client_order_id=client_order_id,
                         symbol=order.symbol)
                return
            except _Transient as exc:
                last, tried = exc, True
                log.warning("alpaca.retry", request="cancel", client_order_id=client_order_id,
                            attempt=attempt + 1, error=str(exc))
            except BrokerRejected as exc:
                if tried and exc.status == 422:  # perhaps our earlier try canceled it
                    now = await self._lookup(client_order_id, "cancel")
                    if now is not None and now.status in ("canceled", "pending_cancel"):
                        return
                raise
        raise BrokerUnavailable(f"cancel {client_order_id}: {last}") from last

    # --- the port: queries -----------------------------------------------------------------

    async def account(self) -> AccountState:
        """Cash, equity and buying power in cents.

        Raises:
            BrokerRejected, BrokerUnavailable: as for any request.
        """
        a = convert_payload(await self._request("account", self._client.get_account), WireAccount,
                     "account")
        return AccountState(cash_cents=cents_of(a.cash), equity_cents=cents_of(a.equity),
                            buying_power_cents=cents_of(a.buying_power))

    async def positions(self) -> list[PositionState]:
        raw = await self._request("positions", self._client.get_all_positions)
        return [
            PositionState(symbol=p.symbol, qty=p.qty, avg_price=p.avg_entry_price,
                          cost_cents=cents_of(p.cost_basis))
            for p in convert_payload(raw, list[WirePosition], "positions")
            if p.qty
        ]

    async def open_orders(self) -> list[OrderState]:
        orders = await self._open_orders()
        if orders:
            # Reconciliation after a restart: this process has not seen the
            # entries that the open bracket legs belong to, and Alpaca links a
            # leg only from its entry. Read the recent orders rolled up
            # (nested) to learn the links, or a leg would pass for an order
            # of our own (and a flatten would wait on it).
            request = GetOrdersRequest(status=QueryOrderStatus.ALL, nested=True,
                                       limit=_OPEN_ORDERS_LIMIT)
            raw = await self._request("orders with legs", self._client.get_orders, request)
            for o in convert_payload(raw, list[WireOrder], "orders with legs"):
                self._orders.note_legs(o)
        parents = self._orders.parents
        return [msgspec.structs.replace(order_state(o), parent_client_order_id=parents.get(
            o.client_order_id, "")) for o in orders]

    async def order(self, client_order_id: str) -> OrderState | None:
        """The broker's view of one order; None if it does not know it."""
        o = await self._lookup(client_order_id)
        return None if o is None else order_state(o)

    async def _open_orders(self) -> list[WireOrder]:
        request = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=_OPEN_ORDERS_LIMIT)
        raw = await self._request("open orders", self._client.get_orders, request)
        orders = convert_payload(raw, list[WireOrder], "open orders")
        if len(orders) >= _OPEN_ORDERS_LIMIT:
            log.warning("alpaca.open_orders_truncated", limit=_OPEN_ORDERS_LIMIT)
        return orders

    # --- the update stream -----------------------------------------------------------------

    async def stream(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow trade updates (and poll silent orders) onto ``updates`` until cancelled.

        ``task_status.started()`` once listening and the open orders are known.

        Raises:
            BrokerRejected: the stream refused our keys at the first connection.
            BrokerUnavailable: the first connection or the open-order read kept failing.
        """
        ws = await self._first_connection()
        try:
            async with anyio.create_task_group() as tg:
                self._orders.rebase(await self._open_orders(), anyio.current_time())
                self._orders.stream_up = True
                # A restarted execution actor's stream: the time nobody
                # listened is not the stream's silence.
                self._health.stream_restarted(anyio.current_time())
                tg.start_soon(self._poll_loop)
                if self._health.enabled:
                    tg.start_soon(self._health_loop)
                task_status.started()
                while True:
                    await self._follow(ws)
                    self._orders.stream_up = False
                    self._poke()
                    await _close(ws)
                    ws = await self._reconnect_forever()
                    self.reconnects += 1
                    self._orders.stream_up = True
                    self._health.stream_restarted(anyio.current_time())
                    self._orders.recover(anyio.current_time())
                    self._poke()
        finally:
            await _close(ws)

    async def _connect(self) -> ClientConnection:
        """Connect, authenticate and listen to ``trade_updates``.

        Raises:
            _StreamRefused: unauthorized.
            OSError, WebSocketException, msgspec.DecodeError: connection trouble.
        """
        creds = self._credentials
        with anyio.fail_after(self._config.request_timeout_s):
            ws = await connect(self._stream_url, proxy=None, open_timeout=None,
                               close_timeout=_CLOSE_S - 1)
            try:
                await ws.send(json_encoder.encode({"action": "authenticate", "data": {
                    "key_id": creds.key_id, "secret_key": creds.secret_key}}).decode())
                reply = envelope_decoder.decode(await ws.recv())
                if reply.stream != "authorization":
                    raise WebSocketException(f"unexpected reply to authenticate: {reply.stream}")
                if control_decoder.decode(reply.data).status != "authorized":
                    raise _StreamRefused("trade stream refused the API keys")
                await ws.send(json_encoder.encode(
                    {"action": "listen", "data": {"streams": ["trade_updates"]}}).decode())
                reply = envelope_decoder.decode(await ws.recv())
                if reply.stream != "listening" or "trade_updates" not in control_decoder.decode(
                        reply.data).streams:
                    raise WebSocketException(f"unexpected reply to listen: {reply.stream}")
            except BaseException:
                await _close(ws)
                raise
        log.info("alpaca.stream_listening")
        return ws

    async def _first_connection(self) -> ClientConnection:
        last: Exception | None = None
        for attempt in range(self._attempts):
            if attempt:
                await self._pause(attempt)
            try:
                return await self._connect()
            except _StreamRefused as exc:
                raise BrokerRejected(str(exc), status=401) from exc
            except (OSError, WebSocketException, msgspec.DecodeError) as exc:
                last = exc
                log.warning("alpaca.stream_connect_failed", attempt=attempt + 1, error=repr(exc))
        raise BrokerUnavailable(f"trade stream: {last!r}") from last

    async def _reconnect_forever(self) -> ClientConnection:
        initial, cap = self._reconnect
        delay = initial
        while True:
            await anyio.sleep(delay * self._rng.uniform(0.5, 1.0))
            try:
                return await self._connect()
            except (_StreamRefused, OSError, WebSocketException, msgspec.DecodeError) as exc:
                log.warning("alpaca.stream_reconnect_failed", error=repr(exc))
            delay = min(delay * 2, cap)

    async def _follow(self, ws: ClientConnection) -> None:
        """Handle frames until the connection ends."""
        try:
            async for frame in ws:
                await self._on_frame(frame)
        except ConnectionClosed as exc:
            log.warning("alpaca.stream_dropped", error=repr(exc))
        else:
            log.warning("alpaca.stream_closed")

    async def _on_frame(self, frame: str | bytes) -> None:
        try:
            envelope = envelope_decoder.decode(frame)
            if envelope.stream != "trade_updates":
                log.info("alpaca.stream_message", stream=envelope.stream)
                return
            update = update_decoder.decode(envelope.data)
        except msgspec.DecodeError as exc:
            # We may have missed a fill: read every live order instead.
            log.error("alpaca.bad_trade_update", error=str(exc))
            self._tell(self._health.heard(None))  # garbled, but the stream speaks
            self._orders.recover(anyio.current_time())
            self._poke()
            return
        self._tell(self._health.heard(update.order.client_order_id))
        async with self._emit_lock:
            await self._send(self._orders.on_update(update, anyio.current_time()))

    # --- polling ---------------------------------------------------------------------------

    def _poke(self) -> None:
        self._wake.set()

    async def _poll_loop(self) -> None:
        while True:
            wake = self._wake = anyio.Event()  # a poke from here on cuts the wait short
            for coid in self._orders.due(anyio.current_time()):
                await self._poll(coid)
            nxt = self._orders.next_due()
            delay = math.inf if nxt is None else max(nxt - anyio.current_time(), 0.0)
            with anyio.move_on_after(delay):
                await wake.wait()

    async def _poll(self, coid: str) -> None:
        if not self._orders.is_live(coid):  # finished while earlier polls ran
            return
        try:
            order = await self._lookup(coid, retry=False)
        except (_Transient, BrokerError) as exc:
            log.warning("alpaca.poll_failed", client_order_id=coid, error=str(exc))
            self._orders.quiet(coid, anyio.current_time())
            return
        now = anyio.current_time()
        if order is None:
            self._orders.missing(coid, now)
            return
        async with self._emit_lock:
            await self._send(self._orders.on_state(order, now))

    # --- health ------------------------------------------------------------------------

    def _tell(self, change: HealthChange | None) -> None:
        """Queue a health change for the health loop to send (callable from anywhere,
        even a request being cancelled: sending may wait for room)."""
        if change is not None:
            self._health_out.append(change)
            self._health_wake.set()

    async def _health_loop(self) -> None:
        """Run the time-driven checks and send what changed, until cancelled."""
        health = self._health
        tick = health.tick_s
        interval = self._config.clock_check_interval_s
        next_clock = anyio.current_time()  # the first reading at start-up
        while True:
            wake = self._health_wake = anyio.Event()  # a _tell from here on cuts the wait
            now = anyio.current_time()
            if health.clock_enabled and now >= next_clock:
                next_clock = now + interval
                await self._check_clock()
            now = anyio.current_time()
            self._tell(health.check_silence(now, stream_up=self._orders.stream_up))
            self._tell(health.check_errors(now))
            out, self._health_out = self._health_out, []
            for change in out:
                (log.info if change.healthy else log.warning)(
                    "alpaca.health_changed", check=change.check, healthy=change.healthy,
                    reason=change.reason)
                await self.updates.send(BrokerHealthChanged(
                    ts_ns=self._now_ns(), check=change.check, healthy=change.healthy,
                    reason=change.reason, measured=change.measured))
            if self._health_out:
                continue
            with anyio.move_on_after(tick):
                await wake.wait()

    async def _check_clock(self) -> None:
        """Read the broker's clock; the skew is its time minus ours at the round
        trip's midpoint (so half the round trip is allowed for)."""
        before = self._now_ns()
        try:
            raw = await self._call("clock", self._client.get_clock)
            stamp = parse_ts(convert_payload(raw, WireClock, "clock").timestamp)
        except (_Transient, BrokerError) as exc:
            # The failure is counted by the error-rate check; the clock is
            # read again at the next interval.
            log.warning("alpaca.clock_check_failed", error=str(exc))
            return
        after = self._now_ns()
        if stamp is None:
            log.warning("alpaca.clock_check_failed", error="unreadable timestamp")
            return
        self._tell(self._health.clock(stamp - (before + after) // 2))

    async def sync(self, symbols: Collection[str]) -> None:
        """Poll our open *market* orders in ``symbols`` now (see the Broker port).

        Resting limit and stop orders are not polled here: nothing says they
        traded, and polling every one of them on every bar would spend the
        200 requests a minute; their fills come on the stream (or the regular
        polling) and risk's order_pending rule covers the gap.

        Several orders are read with one request (the newest orders of their
        symbols, newest first): one round trip and one of the 200 requests a
        minute, where a poll each took a worker thread and a request per
        order. An order that list does not show (or a failed list) is polled
        by itself; those polls run concurrently (at most
        ``max_concurrent_submits`` at once). Each order's events still go out
        whole and one order at a time.
        """
        tracks = [t for t in self._orders.live() if t.market and t.symbol in symbols]
        live = [t.coid for t in tracks]
        if len(live) > 1:
            live = await self._poll_listed(live, {t.symbol for t in tracks})
        if len(live) <= 1:
            for coid in live:
                await self._poll(coid)
            return
        slots = anyio.CapacityLimiter(self._config.max_concurrent_submits)

        async def poll(coid: str) -> None:
            async with slots:
                await self._poll(coid)

        async with anyio.create_task_group() as tg:
            for coid in live:
                tg.start_soon(poll, coid)

    async def _poll_listed(self, coids: list[str], symbols: Collection[str]) -> list[str]:
        """Read the orders ``coids`` (in ``symbols``) with one list request; return those
        it did not show."""
        request = GetOrdersRequest(
            # Nested: an entry carries its bracket legs, as a lookup by id does.
            status=QueryOrderStatus.ALL, limit=_OPEN_ORDERS_LIMIT, nested=True,
            # A long universe would make a long URL; the limit still covers
            # our orders, which are the newest.
            symbols=sorted(symbols) if len(symbols) <= _LIST_SYMBOLS_MAX else None,
        )
        try:
            raw = await self._call("orders poll", self._client.get_orders, request)
            listed = convert_payload(raw, list[WireOrder], "orders poll")
        except (_Transient, BrokerError) as exc:
            log.warning("alpaca.poll_failed", orders=len(coids), error=str(exc))
            return coids
        now = anyio.current_time()
        wanted = set(coids)
        found = {o.client_order_id: o for o in listed if o.client_order_id in wanted}
        for coid in coids:
            order = found.get(coid)
            if order is not None and self._orders.is_live(coid):
                async with self._emit_lock:
                    await self._send(self._orders.on_state(order, now))
        return [c for c in coids if c not in found]

    async def _send(self, messages: Sequence[OrderEvent]) -> None:
        for msg in messages:
            log.info("alpaca.order_event", type=type(msg).__name__,
                     client_order_id=msg.client_order_id, symbol=msg.symbol)
            await self.updates.send(msg)


async def _close(ws: ClientConnection) -> None:
    """Close within a deadline, even while being cancelled."""
    with anyio.move_on_after(_CLOSE_S, shield=True):
        await ws.close()
