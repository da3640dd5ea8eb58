"""systemd's notification protocol (``sd_notify``), in the standard library only.

With ``Type=notify`` the service manager learns three things from us:

* ``READY=1`` once the graph is up and the broker reconciled, so
  ``systemctl start`` returns when we can trade, not when we were forked;
* ``WATCHDOG=1`` every ``WatchdogSec / 2``, sent *from the event loop*: a loop
  blocked for a whole ``WatchdogSec`` stops the pings and systemd kills and
  restarts the process (``Restart=on-failure``). A thread could keep pinging
  while the loop hangs; that is why none does;
* ``STOPPING=1`` when the drain begins.

The wire format: one datagram of newline-separated ``KEY=VALUE`` lines to the
``AF_UNIX`` socket in ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace); ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, when set, must
be ours) asks for pings.

Outside systemd ``$NOTIFY_SOCKET`` is unset and everything here is a no-op.
What it is not: a health check. ``/healthz`` (trader.http) answers that.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable, Mapping

import anyio
import structlog
from anyio.abc import TaskStatus

log = structlog.get_logger("trader.notify")


class Notifier:
    """Sends notifications to systemd.

    Args:
        address: ``$NOTIFY_SOCKET``: a socket path, ``@name`` (abstract), or
            None to do nothing.
        watchdog_usec: ``$WATCHDOG_USEC``; pings go every half of it. None: no pings.
    """

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: socket.socket | None = None
        self._failing = False
        self.sent: dict[str, int] = {}  # first line -> datagrams sent (tests, /status)
        self._stopping_sent = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """Read ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``."""
        env = os.environ if environ is None else environ
        usec: int | None = None
        pid = env.get("WATCHDOG_PID", "")
        if pid.strip() and pid.strip() != str(os.getpid()):
            usec = None  # the watchdog is meant for another process
        else:
            try:
                usec = int(env.get("WATCHDOG_USEC", "") or 0) or None
            except ValueError:
                log.warning("ignoring a malformed WATCHDOG_USEC", value=env["WATCHDOG_USEC"])
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Seconds between pings: half the watchdog timeout, as sd_watchdog_enabled(3) advises."""
        if not self.enabled or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def notify(self, *lines: str) -> bool:
        """Send one datagram of ``lines``; False if it could not be sent (logged once).

        Never raises: systemd being unreachable must not stop trading.
        """
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        payload = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never wait on systemd from the event loop: a full queue is a
                # lost ping, not a blocked loop.
                self._sock.setblocking(False)
            self._sock.sendto(payload, target)
        except OSError as exc:
            if not self._failing:
                log.warning("systemd notification failed", error=f"{type(exc).__name__}: {exc}",
                            message=lines[0] if lines else "")
            self._failing = True
            return False
        if self._failing:
            log.info("systemd notifications work again")
        self._failing = False
        key = lines[0] if lines else ""
        self.sent[key] = self.sent.get(key, 0) + 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def run(
        self,
        *,
        ready: Callable[[], Awaitable[None]],
        stopping: Callable[[], Awaitable[None]],
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Ping the watchdog, say READY=1 when ``ready`` returns and STOPPING=1 when
        ``stopping`` does (or when cancelled before that); run until cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                interval = self.watchdog_interval_s
                if interval is not None:
                    tg.start_soon(self._watchdog, interval)
                task_status.started()
                if not self.enabled:
                    return  # nothing to say: no systemd
                await ready()
                self.notify("READY=1", "STATUS=trading")
                log.info("told systemd we are ready")
                await stopping()
                self._stopping()
                await anyio.sleep_forever()  # keep pinging through the drain
        finally:
            self._stopping()
            self.close()

    def _stopping(self) -> None:
        if self.enabled and not self._stopping_sent:
            self._stopping_sent = True
            self.notify("STOPPING=1", "STATUS=draining")

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notify("WATCHDOG=1")
            await anyio.sleep(interval)
