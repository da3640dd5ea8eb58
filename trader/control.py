"""The control socket: an operator halts, resumes or flattens a running daemon.

``trader run`` serves a Unix stream socket (``[run] control_socket``, mode 600:
only the daemon's user may trade through it) inside the run's task group. One
request per connection, one line of text, one line back::

    halt [reason]      ->  HaltTrading     ->  ok
    resume [reason]    ->  ResumeTrading   ->  ok
    flatten [reason]   ->  FlattenAll      ->  ok

The server posts the message into the graph as the ``control`` source, so it
is routed to risk and journaled like any other message, and answers ``ok``
once the message is in risk's inbox. Risk acts on it when it next takes from
its inbox: within one turn of the event loop when it is idle, after its
current batch otherwise. Anything else is answered ``error: ...``.

This is not an API: no queries and no parameters beyond a reason. What the
daemon is doing is in the journal, the logs and the metrics.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Protocol

import anyio
import structlog
from anyio.abc import SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from trader.actors.base import Outbox
from trader.clock import Clock
from trader.errors import ConfigError, ControlUnavailable
from trader.messages import FlattenAll, HaltTrading, ResumeTrading

log = structlog.get_logger("trader.control")

COMMANDS: dict[str, type[HaltTrading] | type[ResumeTrading] | type[FlattenAll]] = {
    "halt": HaltTrading,
    "resume": ResumeTrading,
    "flatten": FlattenAll,
}



class Target(Protocol):
    """What the server needs of the graph (:class:`trader.graph.Graph`)."""

    @property
    def clock(self) -> Clock: ...

    def outbox(self, source: str) -> Outbox: ...


_MAX_LINE = 1024
_REQUEST_TIMEOUT_S = 5.0
_MAX_REASON = 200


async def serve(graph: Target, path: str | Path, *,
                task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve the control socket at ``path`` until cancelled.

    Raises:
        ConfigError: another process already answers on ``path``.
    """
    p = Path(path)
    _prepare(p)
    # anyio removes a stale socket file left by a crashed predecessor.
    listener = await anyio.create_unix_listener(p, mode=0o600)
    inode = os.stat(p).st_ino
    lock = anyio.Lock()  # one emit at a time: an Outbox is not shared between tasks

    async def handle(stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(_REQUEST_TIMEOUT_S):
                    line = await BufferedByteReceiveStream(stream).receive_until(
                        b"\n", _MAX_LINE)
                    answer = await _execute(graph, line, lock)
                    await stream.send(answer.encode() + b"\n")
            except (TimeoutError, anyio.IncompleteRead, anyio.DelimiterNotFound,
                    anyio.BrokenResourceError, anyio.EndOfStream, UnicodeDecodeError) as exc:
                # A client that went away or spoke nonsense; the daemon carries on.
                log.warning("control request failed", error=type(exc).__name__)

    async with listener:
        log.info("control socket listening", path=str(p))
        task_status.started()
        try:
            await listener.serve(handle)
        finally:
            _remove_if_ours(p, inode)


async def _execute(graph: Target, line: bytes, lock: anyio.Lock) -> str:
    command, _, reason = line.decode("utf-8").strip().partition(" ")
    kind = COMMANDS.get(command.lower())
    if kind is None:
        return f"error: unknown command {command!r} (expected {', '.join(COMMANDS)})"
    msg = kind(ts_ns=graph.clock.now_ns(), reason=reason.strip()[:_MAX_REASON] or "operator")
    async with lock:
        try:
            await graph.outbox("control").emit(msg)
        except anyio.ClosedResourceError:
            return "error: the daemon is shutting down"
    log.warning("operator command", command=command, reason=msg.reason)
    return "ok"


# Local file-system calls on a socket path: microseconds, not worth a thread.


def _prepare(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and _answers(path):
        raise ConfigError(f"$.run.control_socket: another daemon is listening on {path}")


def _remove_if_ours(path: Path, inode: int) -> None:
    # Only our own socket file: a successor may already have replaced it.
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_ino == inode:
            path.unlink()


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(os.fspath(path))
        except OSError:
            return False
    return True


def send_command(path: str | Path, command: str, reason: str = "operator",
                 *, timeout_s: float = 5.0) -> str:
    """Send one command to the daemon on ``path`` and return its answer (``ok``).

    Synchronous on purpose: the CLI has no event loop to share.

    Raises:
        ControlUnavailable: nothing answers on ``path`` (or it timed out).
        ValueError: ``command`` is not one of :data:`COMMANDS`.
    """
    if command not in COMMANDS:
        raise ValueError(f"unknown control command {command!r}")
    line = f"{command} {' '.join(reason.split())}\n".encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(os.fspath(path))
            s.sendall(line)
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = s.recv(_MAX_LINE)
                if not chunk:
                    break
                reply += chunk
        except OSError as exc:  # includes socket.timeout
            raise ControlUnavailable(f"no daemon answered on {path}: {exc}") from exc
    if not reply:
        raise ControlUnavailable(f"the daemon on {path} closed the connection without answering")
    return reply.decode("utf-8", "replace").strip()
