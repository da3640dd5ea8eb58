"""API keys: from the environment or from files with tight permissions, never from TOML.

Order of precedence for each of the key id and the secret:

1. the environment variable (``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY`` by
   default, names configurable);
2. a file named in config (``key_id_file`` / ``secret_key_file``), or found in
   ``$CREDENTIALS_DIRECTORY`` (systemd's ``LoadCredential=``). A file readable
   by group or others is refused: a secret that anyone on the machine can read
   is no secret.

Every value read is registered with the log redactor (trader.logs), so it
cannot appear in a log line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec

from trader import logs
from trader.errors import ConfigError


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    """A key pair. ``repr`` hides the secret."""

    key_id: str
    secret_key: str

    def __repr__(self) -> str:
        return f"Credentials(key_id={self.key_id[:4]}***, secret_key=***)"


def read_secret_file(path: str | Path) -> str:
    """Read a one-line secret from a file that only its owner can read.

    Raises:
        ConfigError: missing, unreadable, too open (group/other bits set) or empty.
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{p}: credentials file not found") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{p}: credentials file is readable by group or others "
            f"(mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
    value = p.read_text(encoding="utf-8").strip()
    if not value:
        raise ConfigError(f"{p}: credentials file is empty")
    return value


def _one(env: str, file: str, credential_name: str, what: str) -> str:
    value = os.environ.get(env, "").strip()
    if not value and file:
        value = read_secret_file(file)
    if not value:
        creds_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if creds_dir and (Path(creds_dir) / credential_name).exists():
            value = read_secret_file(Path(creds_dir) / credential_name)
    if not value:
        raise ConfigError(
            f"no {what}: set ${env}, or name a file in config, or use systemd LoadCredential="
            f"{credential_name}"
        )
    logs.register_secret(value)
    return value


def load_credentials(
    *,
    key_id_env: str = "APCA_API_KEY_ID",
    secret_env: str = "APCA_API_SECRET_KEY",
    key_id_file: str = "",
    secret_file: str = "",
) -> Credentials:
    """Find the API key pair.

    Raises:
        ConfigError: a key is missing or its file is unsafe.
    """
    return Credentials(
        key_id=_one(key_id_env, key_id_file, "apca_key_id", "API key id"),
        secret_key=_one(secret_env, secret_file, "apca_secret_key", "API secret key"),
    )
