"""systemd/trader.service: systemd accepts it, and it is locked down.

``systemd-analyze verify`` checks that ExecStart= is executable, so it runs on a
copy whose ExecStart points at /bin/true; everything else is the shipped file.
Skips when systemd-analyze is not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from trader.config import RunConfig, SupervisorConfig

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "trader.service"
EXEC = "/opt/trader/.venv/bin/trader"

needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                           reason="systemd-analyze is not installed")


def _settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def _checkable_copy(tmp_path: Path) -> Path:
    text = UNIT.read_text()
    assert f"ExecStart={EXEC} " in text
    copy = tmp_path / "trader.service"
    copy.write_text(text.replace(f"ExecStart={EXEC} ", "ExecStart=/bin/true "))
    return copy


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(tmp_path: Path) -> None:
    """No error and no warning (an unknown key is only a warning, so stderr must be empty)."""
    proc = subprocess.run(["systemd-analyze", "verify", str(_checkable_copy(tmp_path))],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


@needs_systemd_analyze
def test_the_unit_is_rated_2_or_better_by_systemd_analyze_security(tmp_path: Path) -> None:
    """``systemd-analyze security`` gives an overall exposure of 2.0 or lower ("OK")."""
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager",
         str(_checkable_copy(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )
    if "--offline" in proc.stderr and proc.returncode != 0:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match is not None, proc.stdout + proc.stderr
    assert float(match.group(1)) <= 2.0, proc.stdout


def test_the_unit_keeps_the_documented_contract() -> None:
    """Type=notify with a watchdog, the restart budget, stop timeout, credentials, state dir."""
    s = _settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] == ["30"]
    assert s["ExecStart"] == [f"{EXEC} run --config /etc/trader/paper.toml"]
    assert s["Restart"] == ["on-failure"]
    assert (s["StartLimitBurst"], s["StartLimitIntervalSec"]) == (["3"], ["600"])
    # systemd's SIGKILL must come after the in-process drain deadline.
    assert float(s["TimeoutStopSec"][0]) > RunConfig().shutdown_deadline_s
    # The comment's arithmetic matches the numbers.
    intensity = SupervisorConfig().intensity
    assert f"{intensity} x 3 = {intensity * 3} actor restarts per 10 minutes" in UNIT.read_text()
    assert set(s["LoadCredential"]) == {"apca_key_id:/etc/trader/apca_key_id",
                                        "apca_secret_key:/etc/trader/apca_secret_key"}
    assert s["DynamicUser"] == ["yes"]
    assert s["StateDirectory"] == ["trader"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "ProtectControlGroups", "LockPersonality", "MemoryDenyWriteExecute",
                "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "ProtectClock",
                "ProtectHostname"):
        assert s[key] == ["yes"], key
    assert s["ProtectSystem"] == ["strict"]
    assert s["CapabilityBoundingSet"] == [""]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert s["SystemCallFilter"][0] == "@system-service"
    assert s["UMask"] == ["0077"]


def test_the_paper_config_writes_its_journal_in_the_state_directory() -> None:
    """paper.toml's run.db is under /var/lib/trader, the only writable place."""
    text = (REPO / "config" / "paper.toml").read_text()
    assert re.search(r'^db = "/var/lib/trader/[^"]+"$', text, re.MULTILINE)
