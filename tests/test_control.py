"""Operator controls: the control socket, and trader halt / resume against a running daemon."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from trader.actors.base import Outbox
from trader.channels import Channel
from trader.clock import ReplayClock
from trader.config import Config, decode_config
from trader.control import send_command, serve
from trader.data.synth import synth_bars, write_csv
from trader.errors import ConfigError, ControlUnavailable
from trader.graph import ROUTES, Graph
from trader.messages import (
    FlattenAll,
    HaltTrading,
    Message,
    OrderDenied,
    ResumeTrading,
    RiskStateChanged,
    SubmitOrder,
    decode,
)
from trader.runner import run_replay

REPO = Path(__file__).resolve().parent.parent
WAIT_S = 30.0


def _data(tmp_path: Path) -> Path:
    out = tmp_path / "data"
    write_csv(synth_bars(2, days=1, seed=7), out)
    return out


async def _until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(WAIT_S):
        # Polling on purpose: the condition is state of a graph running in
        # other tasks, which signals nothing we could wait on.
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.005)


def _journal(db: Path) -> list[tuple[str, Any]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT source, body FROM journal ORDER BY ts_ns, source, seq"
                            ).fetchall()
    return [(source, decode(body)) for source, body in rows]


@pytest.mark.asyncio
async def test_halt_resume_and_flatten_over_the_socket_reach_risk_in_a_running_graph(
    tmp_path: Path,
) -> None:
    """Each command is answered ``ok``, journaled from ``control`` and acted on by risk."""
    sock = tmp_path / "c.sock"
    db = tmp_path / "run.db"
    config = decode_config({
        "run": {"db": str(db)},
        "data": {"dir": str(_data(tmp_path))},
        "replay": {"speed": 60.0},  # one bar a second: still running while we talk to it
        "strategy": {"name": "sma_cross", "params": {"fast": 2, "slow": 5}},
    })
    graphs: list[Graph] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run_replay(config, control_socket=str(sock),
                                         on_graph=graphs.append))
        await _until(lambda: bool(graphs) and graphs[0].ready)
        graph = graphs[0]
        machine = graph.trading_state

        async def command(name: str, reason: str = "operator") -> str:
            return await anyio.to_thread.run_sync(lambda: send_command(sock, name, reason))

        assert await command("halt", "from the test") == "ok"
        await _until(lambda: machine.state == "HALTED")
        assert await command("flatten") == "ok"
        assert await command("resume") == "ok"
        await _until(lambda: machine.state == "ACTIVE")
        graph.request_stop()
    assert not sock.exists()  # removed on the way out
    journal = _journal(db)
    control = [type(m).__name__ for src, m in journal if src == "control"]
    assert control == ["HaltTrading", "FlattenAll", "ResumeTrading"]
    halt = next(m for _, m in journal if isinstance(m, HaltTrading))
    assert halt.reason == "from the test"
    changes = [(m.state, m.reason) for _, m in journal if isinstance(m, RiskStateChanged)]
    assert changes == [("HALTED", "operator: from the test"), ("ACTIVE", "operator")]
    assert next(m for _, m in journal if isinstance(m, FlattenAll)).reason == "operator"


class _Idle:
    """Just what the control server needs of a graph: a clock and the control outbox."""

    def __init__(self) -> None:
        self.clock = ReplayClock()
        self.risk: Channel[Message] = Channel("risk", 16)

    def outbox(self, source: str) -> Outbox:
        return Outbox(source, {t: [self.risk] for t in ROUTES[source]}, None)

    def sent(self) -> list[Message]:
        out = []
        while True:
            try:
                out.append(self.risk.receive_nowait())
            except anyio.WouldBlock:
                return out


@pytest.mark.asyncio
async def test_the_socket_answers_nonsense_with_an_error_and_keeps_serving(
    tmp_path: Path,
) -> None:
    """An unknown command, or a client that hangs up, does not stop the server."""
    sock = tmp_path / "c.sock"
    graph = _Idle()
    async with anyio.create_task_group() as tg:
        await tg.start(serve, graph, sock)

        def raw(payload: bytes) -> bytes:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(sock))
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                return s.recv(1024)

        assert (await anyio.to_thread.run_sync(raw, b"dance\n")).startswith(
            b"error: unknown command 'dance'")
        assert await anyio.to_thread.run_sync(raw, b"halt") == b""  # no newline: hung up
        assert await anyio.to_thread.run_sync(send_command, sock, "halt") == "ok"
        tg.cancel_scope.cancel()
    assert [type(m).__name__ for m in graph.sent()] == ["HaltTrading"]


@pytest.mark.asyncio
async def test_a_second_daemon_refuses_a_socket_that_answers_but_replaces_a_stale_one(
    tmp_path: Path,
) -> None:
    """A live socket is somebody else's: ConfigError. A dead one (a crash) is taken over."""
    sock = tmp_path / "c.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # the file stays, nobody listens: what a crash leaves behind
    graph = _Idle()
    async with anyio.create_task_group() as tg:
        await tg.start(serve, graph, sock)
        assert oct(sock.stat().st_mode & 0o777) == oct(0o600)
        with pytest.raises(ConfigError, match="another daemon is listening"):
            await serve(graph, sock)
        tg.cancel_scope.cancel()


def test_a_command_with_no_daemon_raises_control_unavailable(tmp_path: Path) -> None:
    """Nothing listens: ControlUnavailable, which the CLI turns into exit code 6."""
    with pytest.raises(ControlUnavailable):
        send_command(tmp_path / "none.sock", "halt")
    proc = subprocess.run(
        [sys.executable, "-m", "trader", "halt", "--socket", str(tmp_path / "none.sock")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 6
    assert "no daemon answered" in proc.stderr


# --- against a running daemon ------------------------------------------------------------


class _Daemon:
    """``trader run`` on a paced replay, in a subprocess."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "run.db"
        self.sock = tmp_path / "c.sock"
        cfg = tmp_path / "run.toml"
        cfg.write_text(
            f'[run]\ndb = "{self.db}"\ncontrol_socket = "{self.sock}"\n'
            f'[data]\ndir = "{_data(tmp_path)}"\n'
            '[feed]\nkind = "replay"\n'
            # Five bars a second: it runs for over a minute unless stopped.
            "[replay]\nspeed = 300.0\n"
            '[strategy]\nname = "sma_cross"\nparams = { fast = 2, slow = 5 }\n'
            '[risk]\nsizing = "fixed_fraction"\nfixed_fraction = 0.3\n'
            # No operations endpoint on a fixed port that a concurrent run may hold.
            + ("[http]\nenabled = false\n" if "http" in Config.__struct_fields__ else "")
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trader", "run", "--config", str(cfg)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONWARNINGS": "always"},
        )
        self.stderr: list[str] = []

    def wait_for_log(self, needle: str) -> None:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.stderr.append(line)
            if needle in line:
                return
        raise AssertionError(f"{needle!r} never logged:\n{''.join(self.stderr)}")

    def wait_for(self, what: str, condition: Callable[[list[Any]], bool]) -> list[Any]:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.db.exists():
                try:
                    journal = [m for _, m in _journal(self.db)]
                except sqlite3.OperationalError:
                    journal = []  # the schema is not there yet
                if condition(journal):
                    return journal
            time.sleep(0.05)  # polling another process's database
        raise AssertionError(f"timed out waiting for {what}")

    def command(self, name: str, reason: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "trader", name, "--socket", str(self.sock),
             "--reason", reason],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "ok"


def _state_change(journal: list[Any], state: str) -> RiskStateChanged | None:
    return next((m for m in journal if isinstance(m, RiskStateChanged) and m.state == state),
                None)


def test_trader_halt_stops_new_orders_in_a_running_daemon_and_resume_restarts_them(
    tmp_path: Path,
) -> None:
    """Halt: signals are denied (``trading_state``) and no order goes out; resume: orders
    flow again; both commands and both state changes are in the journal."""
    d = _Daemon(tmp_path)
    try:
        d.wait_for_log('"control socket listening"')
        d.wait_for_log('"graph ready"')
        d.wait_for("a first order", lambda j: any(isinstance(m, SubmitOrder) for m in j))

        d.command("halt", "test-halt")
        d.wait_for("a denial while halted", lambda j: any(
            isinstance(m, OrderDenied) and m.reason_code == "trading_state" for m in j))

        d.command("resume", "test-resume")

        def ordered_after_resume(j: list[Any]) -> bool:
            active = _state_change(j, "ACTIVE")
            return active is not None and any(
                isinstance(m, SubmitOrder) and m.ts_ns > active.ts_ns for m in j)

        d.wait_for("an order after resume", ordered_after_resume)
        d.proc.send_signal(signal.SIGTERM)
        _, err = d.proc.communicate(timeout=30)
    finally:
        d.proc.kill()
    assert d.proc.returncode == 0, "".join(d.stderr) + err
    journal = _journal(d.db)
    commands = [(src, type(m).__name__, m.reason) for src, m in journal
                if isinstance(m, HaltTrading | ResumeTrading)]
    assert commands == [("control", "HaltTrading", "test-halt"),
                        ("control", "ResumeTrading", "test-resume")]
    messages = [m for _, m in journal]
    halted, active = _state_change(messages, "HALTED"), _state_change(messages, "ACTIVE")
    assert halted is not None
    assert active is not None
    assert (halted.previous, halted.reason) == ("ACTIVE", "operator: test-halt")
    assert (active.previous, active.reason) == ("HALTED", "operator: test-resume")
    assert not [m for m in messages if isinstance(m, SubmitOrder)
                and halted.ts_ns < m.ts_ns < active.ts_ns]
    assert [m for m in messages if isinstance(m, OrderDenied)
            and halted.ts_ns < m.ts_ns < active.ts_ns and m.reason_code == "trading_state"]
