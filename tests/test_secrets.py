"""API keys: environment or tight files only, and never in a log line."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import structlog

from trader import logs
from trader.errors import ConfigError
from trader.secrets import load_credentials, read_secret_file


def _file(tmp_path: Path, name: str, text: str, mode: int) -> Path:
    p = tmp_path / name
    p.write_text(text)
    p.chmod(mode)
    return p


def test_keys_come_from_the_environment_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """APCA_API_KEY_ID / APCA_API_SECRET_KEY win over everything else."""
    monkeypatch.setenv("APCA_API_KEY_ID", "PKENVKEY123")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "envsecret456")
    creds = load_credentials(key_id_file="/nonexistent", secret_file="/nonexistent")
    assert (creds.key_id, creds.secret_key) == ("PKENVKEY123", "envsecret456")
    assert "envsecret456" not in repr(creds)


def test_keys_come_from_owner_only_files(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the environment, files named in config with mode 600 are read."""
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    key = _file(tmp_path, "key", "PKFILEKEY\n", 0o600)
    secret = _file(tmp_path, "secret", "filesecret789\n", 0o600)
    creds = load_credentials(key_id_file=str(key), secret_file=str(secret))
    assert (creds.key_id, creds.secret_key) == ("PKFILEKEY", "filesecret789")


def test_systemd_credentials_directory_is_used(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """LoadCredential= files in $CREDENTIALS_DIRECTORY are found by their names."""
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    _file(tmp_path, "apca_key_id", "PKSYSTEMD", 0o400)
    _file(tmp_path, "apca_secret_key", "systemdsecret", 0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load_credentials().secret_key == "systemdsecret"


def test_a_secret_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """Mode 644 is a secret anyone on the machine can read: refused, naming the fix."""
    p = _file(tmp_path, "secret", "x" * 10, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret_file(p)


def test_missing_and_empty_secrets_are_config_errors(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """No key anywhere, a missing file or an empty one: a clear config error."""
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="APCA_API_KEY_ID"):
        load_credentials()
    with pytest.raises(ConfigError, match="not found"):
        read_secret_file(tmp_path / "nope")
    with pytest.raises(ConfigError, match="empty"):
        read_secret_file(_file(tmp_path, "empty", "\n", 0o600))


def test_a_loaded_secret_never_reaches_a_log_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even logged by mistake, as a value or inside a message, the secret is masked."""
    monkeypatch.setenv("APCA_API_KEY_ID", "PKLEAKCHECK")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "topsecret-value-42")
    load_credentials()
    out = io.StringIO()
    logs.configure("info", stream=out, json=True)
    try:
        log = structlog.get_logger("test")
        log.info("oops", detail="auth with topsecret-value-42 failed", secret_key="whatever")
        log.info("header", value="APCA-API-SECRET-KEY: topsecret-value-42")
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert "topsecret-value-42" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["secret_key"] == "***"
    assert "***" in lines[0]["detail"]
    assert os.environ["APCA_API_SECRET_KEY"] == "topsecret-value-42"
