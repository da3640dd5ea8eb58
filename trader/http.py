"""The operations endpoint of ``trader run``: one small aiohttp server.

=============  ==================================================================
``/metrics``   Prometheus text format, or OpenMetrics if asked (trader.metrics)
``/healthz``   liveness: 200 while the process answers and its event loop is
               not lagging; 503 otherwise (restart me)
``/readyz``    readiness: 200 when the daemon can trade: every actor started,
               the trade stream listening, reconciliation done, the feed
               connected and risk not HALTED; else 503, with a JSON body naming
               each condition that fails
``/status``    JSON: positions, open orders, P&L, equity, risk state, last bar
``/``          the same as a self-contained HTML page (no external assets)
=============  ==================================================================

It binds ``[http] listen`` (``127.0.0.1:9108`` by default: local only) and
runs in the same event loop as the graph, so a blocked loop also shows as a
``/healthz`` that does not answer. :class:`Ops` runs it together with the
loop monitor and systemd notification (trader.notify) around one graph, in the
run's task group (trader.runner).

What it is not: a control API. Nothing here changes what the daemon does.
"""

from __future__ import annotations

import functools
import html
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import structlog
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

from trader.config import HttpConfig
from trader.errors import ConfigError
from trader.metrics import Metrics
from trader.notify import Notifier

if TYPE_CHECKING:
    from trader.graph import Graph

log = structlog.get_logger("trader.http")

_SHUTDOWN_S = 2.0


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9108`` for IPv6) as a pair.

    Raises:
        ConfigError: not ``host:port`` with a port in 0..65535.
    """
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"$.http.listen: expected host:port (e.g. 127.0.0.1:9108), got {text!r}")
    return host, int(port)


class Ops:
    """Metrics, the HTTP endpoint and systemd notification for one ``trader run``.

    Args:
        config: ``[http]``.
        registry: where metrics register (default: prometheus_client's global
            registry, which also carries the process and GC collectors; tests
            pass a fresh one).
        notifier: default: from ``$NOTIFY_SOCKET`` / ``$WATCHDOG_USEC``.

    Raises:
        ConfigError: ``[http] listen`` is not ``host:port``.
    """

    def __init__(
        self,
        config: HttpConfig,
        *,
        registry: CollectorRegistry | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.host, self.port = parse_listen(config.listen)
        self.metrics = Metrics(REGISTRY if registry is None else registry,
                               max_loop_lag_s=config.max_loop_lag_s)
        self.notifier = Notifier.from_env() if notifier is None else notifier
        self.url: str | None = None
        """``http://host:port`` once serving (the real port when ``listen`` asked for 0)."""

    async def run(
        self, graph: Graph, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; ``started()`` once the port is bound (or binding failed).

        An address that cannot be bound (in use, not ours) is logged as an
        error and the daemon goes on without the endpoint: observability must
        never stop trading, and Prometheus reports the missing target
        (``up == 0``, alert TraderDown). systemd notification does not need it.
        """
        self.metrics.attach(graph)

        async def ready() -> None:
            await graph.wait_ready()
            await self.metrics.wait_reconciled()

        async with anyio.create_task_group() as tg:
            tg.start_soon(self.metrics.watch_loop)
            if self.config.enabled:
                await tg.start(self._serve)
            await tg.start(functools.partial(self.notifier.run, ready=ready,
                                             stopping=graph.wait_stopping))
            task_status.started()

    async def _serve(self, *, task_status: TaskStatus[None]) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status)
        app.router.add_get("/", self._page)
        runner = web.AppRunner(app, handle_signals=False, access_log=None,
                               shutdown_timeout=_SHUTDOWN_S)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            try:
                await site.start()
            except OSError as exc:
                log.error("http endpoint not started: cannot listen", listen=self.config.listen,
                          error=exc.strerror or str(exc))
                task_status.started()
                return
            host, port = runner.addresses[0][:2]
            self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
            log.info("http listening", url=self.url)
            task_status.started()
            await anyio.sleep_forever()
        finally:
            # Shielded and bounded: a cancelled run must still release the port.
            with anyio.move_on_after(_SHUTDOWN_S + 1, shield=True):
                await runner.cleanup()
            self.url = None

    # --- handlers ------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        # The text format by default, OpenMetrics when the scraper asks for it.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.metrics.registry),
                            headers={"Content-Type": content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        cond = self.metrics.healthy()
        return _json({"ok": cond.ok, "event_loop": cond.detail}, 200 if cond.ok else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        checks = self.metrics.readiness()
        ok = all(c.ok for c in checks)
        body = {
            "ready": ok,
            "failing": [c.name for c in checks if not c.ok],
            "conditions": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        }
        return _json(body, 200 if ok else 503)

    async def _status(self, request: web.Request) -> web.Response:
        return _json(self.metrics.status(), 200)

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=render_page(self.metrics.status()), content_type="text/html")


def _json(body: dict[str, Any], status: int) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), status=status,
                        content_type="application/json")


def _money(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def render_page(s: dict[str, Any]) -> str:
    """The status page: one HTML document with inline CSS, refreshed every 5 s."""
    e = html.escape
    last_bar = s.get("last_bar_ns")
    when = (datetime.fromtimestamp(last_bar / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            if last_bar else "—")
    conditions = "".join(
        f"<tr><td>{e(name)}</td><td class={'ok' if c['ok'] else 'bad'}>"
        f"{'ok' if c['ok'] else 'failing'}</td><td>{e(str(c['detail']))}</td></tr>"
        for name, c in s["conditions"].items()
    )
    positions = "".join(
        f"<tr><td>{e(sym)}</td><td>{p['qty']:g}</td><td>{p['avg_price']:,.2f}</td></tr>"
        for sym, p in s["positions"].items()
    ) or "<tr><td colspan=3>flat</td></tr>"
    restarts = ", ".join(f"{e(a)} {n}" for a, n in s["restarts"].items() if n) or "none"
    rows = [
        ("ready", "yes" if s["ready"] else "no"),
        ("risk state", s["risk_state"]),
        ("feed", s["feed_status"] or ("replay" if s["mode"] == "replay" else "—")),
        ("last bar", when),
        ("equity", _money(s["equity"])),
        ("cash", _money(s["cash"])),
        ("gross exposure", _money(s["gross_exposure"])),
        ("realised P&amp;L", _money(s["realized_pnl"])),
        ("unrealised P&amp;L", _money(s["unrealized_pnl"])),
        ("drawdown", f"{100 * s['drawdown']:.2f}%"),
        ("open orders", str(s["open_orders"])),
        ("restarts", restarts),
    ]
    summary = "".join(
        f"<tr><th>{label}</th><td>{e(str(value))}</td></tr>" for label, value in rows
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<title>trader {e(str(s['version']))}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ text-align: left; padding: .2em 1em .2em 0; border-bottom: 1px solid #ddd; }}
.ok {{ color: #17692b; }} .bad {{ color: #b00020; font-weight: bold; }}
</style></head><body>
<h1>trader {e(str(s['version']))}
<small>{e(str(s['mode']))} · run {e(str(s['run_id']))}</small></h1>
<table>{summary}</table>
<h2>Readiness</h2><table>{conditions}</table>
<h2>Positions</h2><table><tr><th>symbol</th><th>qty</th><th>avg price</th></tr>{positions}</table>
<p><a href="/metrics">metrics</a> · <a href="/status">status JSON</a> ·
<a href="/readyz">readyz</a> · <a href="/healthz">healthz</a></p>
</body></html>
"""
