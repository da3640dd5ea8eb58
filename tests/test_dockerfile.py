"""The Dockerfile, read as text (no Docker engine in CI): its promises are written down.

This does not build the image; it checks the properties the deployment relies
on: two stages, a non-root runtime user, the journal on a volume, a health
check through /healthz without curl, and a default command that serves the
endpoint beyond the container.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text()
    joined = re.sub(r"\\\n", " ", text)  # continuation lines
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_the_image_is_built_in_two_stages_on_python_311_slim() -> None:
    """A builder with the venv, then a slim runtime that copies only the venv."""
    froms = [rest for word, rest in _instructions() if word == "FROM"]
    assert len(froms) >= 2
    assert froms[-1].startswith("python:3.11-slim")
    copies = [rest for word, rest in _instructions() if word == "COPY"]
    assert any(c.startswith("--from=builder /opt/trader/.venv") for c in copies)


def test_the_runtime_runs_as_a_non_root_user_with_the_journal_on_a_volume() -> None:
    """USER is set after the last FROM and is not root; VOLUME holds /var/lib/trader."""
    ins = _instructions()
    last_from = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    users = [rest for w, rest in ins[last_from:] if w == "USER"]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    volumes = [rest for w, rest in ins if w == "VOLUME"]
    assert any("/var/lib/trader" in v for v in volumes)


def test_the_health_check_calls_healthz_with_the_standard_library() -> None:
    """HEALTHCHECK uses python's urllib (slim images have no curl)."""
    checks = [rest for w, rest in _instructions() if w == "HEALTHCHECK"]
    assert len(checks) == 1
    check = checks[0]
    assert "/healthz" in check
    assert "urllib" in check
    assert "curl" not in check
    cmd = json.loads(check[check.index("CMD") + 3:].strip())
    assert cmd[0] == "python"
    compile(cmd[-1], "<healthcheck>", "exec")  # the one-liner is valid Python


def test_the_default_command_runs_the_sandbox_with_the_endpoint_reachable() -> None:
    """``trader run`` on sandbox.toml, the journal on the volume, listening on 0.0.0.0."""
    cmds = [rest for w, rest in _instructions() if w == "CMD"]
    argv = json.loads(cmds[-1])
    assert argv[:4] == ["trader", "run", "--config", "config/sandbox.toml"]
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert 'run.db="/var/lib/trader/sandbox.db"' in sets
    assert 'http.listen="0.0.0.0:9108"' in sets
    exposes = [shlex.split(rest) for w, rest in _instructions() if w == "EXPOSE"]
    assert ["9108"] in exposes


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    """No git history, venvs, journals or caches in the build context."""
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "*.db", "runs", "**/__pycache__"} <= ignored
