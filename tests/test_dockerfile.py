"""The Dockerfile: its promises read as text, then the image built and run.

The text checks hold everywhere: two stages, a non-root runtime user, the
journal on a volume, a health check through /healthz without curl, and a
default command that serves the endpoint beyond the container.

The image tests build this checkout with ``docker build`` and run the default
command. They skip without a Docker daemon or without the ``python:3.11-slim``
base image (present or pullable); ``.ci/run`` provides both (Debian's
``docker.io``, and a Debian bookworm stand-in for the base image when no
container registry is reachable).
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shlex
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKER = shutil.which("docker")
BASE_IMAGE = "python:3.11-slim"
BUILD_S = 600.0  # a cold build downloads every dependency from the package index
HEALTHY_S = 90.0  # the daemon is up in seconds; the margin is for a loaded machine
STOP_S = 30  # `docker stop -t`: the in-container drain deadline is 10 s


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
    # The working directory is root's: every path the daemon writes is on the volume.
    assert 'run.control_socket="/var/lib/trader/trader.sock"' in sets
    assert 'http.listen="0.0.0.0:9108"' in sets
    exposes = [shlex.split(rest) for w, rest in _instructions() if w == "EXPOSE"]
    assert ["9108"] in exposes


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    """No git history, venvs, journals or caches in the build context."""
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "*.db", "runs", "**/__pycache__"} <= ignored


def test_the_build_fetches_nothing_but_the_base_image_and_packages() -> None:
    """No ``# syntax=`` line (BuildKit would pull it from Docker Hub), no image but the base."""
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILE.read_text(), re.MULTILINE | re.IGNORECASE)
    ins = _instructions()
    stages = {rest.split()[-1] for w, rest in ins if w == "FROM" and " AS " in rest.upper()}
    images = {rest.split()[0] for w, rest in ins if w == "FROM"}
    assert images - stages == {BASE_IMAGE}
    copied_from = {m.group(1) for w, rest in ins if w == "COPY"
                   for m in [re.match(r"--from=(\S+)", rest)] if m}
    assert copied_from <= stages


# --- the image, built and run -----------------------------------------------------------


def _docker(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    assert DOCKER is not None
    return subprocess.run([DOCKER, *args], capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def _ok(*args: str, timeout_s: float = 60.0) -> str:
    """``docker <args>``'s stdout; the test fails with its stderr if it fails."""
    proc = _docker(*args, timeout_s=timeout_s)
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr[-3000:]}"
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """This checkout built with ``docker build``; removed afterwards (the build cache stays)."""
    if DOCKER is None:
        pytest.skip("docker is not installed (.ci/run installs Debian's docker.io)")
    info = _docker("info")
    if info.returncode != 0:
        pytest.skip(f"no Docker daemon answers: {info.stderr.strip()[-300:]}")
    if _docker("image", "inspect", BASE_IMAGE).returncode != 0:
        pull = _docker("pull", BASE_IMAGE, timeout_s=300.0)
        if pull.returncode != 0:
            pytest.skip(f"base image {BASE_IMAGE} is not available: {pull.stderr.strip()[-300:]}")
    # A tag of its own: a concurrent run removing its image must not remove ours.
    tag = f"trader:test-{uuid.uuid4().hex[:12]}"
    _ok("build", "--tag", tag, str(REPO), timeout_s=BUILD_S)
    yield tag
    _docker("image", "rm", tag)


class Container:
    """One ``docker run -d`` of the image, port 9108 published on a free loopback port."""

    def __init__(self, image: str, volume: str) -> None:
        self.name = f"trader-test-{uuid.uuid4().hex[:12]}"
        # docker events replays from --since, so no health event can slip by
        # between `docker run` and the subscription (whole seconds: one back).
        self._since = str(int(time.time()) - 1)
        # A 1 s probe interval instead of 30 s; the probe itself is the image's.
        _ok("run", "--detach", "--name", self.name, "--publish", "127.0.0.1::9108",
            "--volume", f"{volume}:/var/lib/trader", "--health-interval", "1s", image)

    def wait_healthy(self) -> None:
        """Block until Docker's HEALTHCHECK says healthy; fail if it dies or says unhealthy."""
        assert DOCKER is not None
        cmd = [DOCKER, "events", "--since", self._since, "--filter", f"container={self.name}",
               "--filter", "event=health_status", "--filter", "event=die",
               "--format", "{{.Status}}"]
        verdict = ""
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as events:
            # Read the raw fd under a selector: a buffered readline could hold
            # a verdict back while select() waits for more bytes.
            assert events.stdout is not None
            fd = events.stdout.fileno()
            deadline = time.monotonic() + HEALTHY_S
            buffered = b""
            try:
                with selectors.DefaultSelector() as sel:
                    sel.register(fd, selectors.EVENT_READ)
                    while not verdict and (left := deadline - time.monotonic()) > 0:
                        if not sel.select(left):
                            break
                        chunk = os.read(fd, 4096)
                        if not chunk:
                            break
                        buffered += chunk
                        *lines, buffered = buffered.split(b"\n")
                        verdict = next((s for line in lines if (s := line.decode().strip())
                                        and s != "health_status: starting"), "")
            finally:
                events.kill()  # `docker events` never ends by itself
        assert verdict == "health_status: healthy", (
            f"{verdict or f'no health verdict in {HEALTHY_S:.0f} s'}\n{self.logs()}")

    def url(self, path: str) -> str:
        host_port = _ok("port", self.name, "9108/tcp").splitlines()[0]
        return f"http://{host_port}{path}"

    def get_json(self, path: str) -> tuple[int, Any]:
        with urllib.request.urlopen(self.url(path), timeout=10) as resp:
            return resp.status, json.loads(resp.read())

    def wait_risk_state(self, state: str) -> None:
        """Until /status shows ``state``: risk acts on a command after answering it."""
        deadline = time.monotonic() + HEALTHY_S
        while (now := self.get_json("/status")[1]["risk_state"]) != state:
            assert time.monotonic() < deadline, f"risk_state is {now}, not {state}"
            time.sleep(0.05)  # polling another process's endpoint

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return _docker("exec", self.name, *argv)

    def stop(self) -> int:
        """SIGTERM, then the exit code the daemon chose."""
        _ok("stop", "-t", str(STOP_S), self.name, timeout_s=STOP_S + 30)
        return int(_ok("inspect", "--format", "{{.State.ExitCode}}", self.name))

    def logs(self) -> str:
        proc = _docker("logs", "--tail", "40", self.name)
        return proc.stdout + proc.stderr

    def remove(self) -> None:
        _docker("rm", "--force", self.name)


@pytest.fixture
def volume() -> Iterator[str]:
    """A fresh named volume for /var/lib/trader, removed with its containers."""
    name = f"trader-test-{uuid.uuid4().hex[:12]}"
    _ok("volume", "create", name)
    yield name
    _docker("volume", "rm", "--force", name)


@pytest.mark.slow
@pytest.mark.timeout(BUILD_S + 300)
def test_the_image_runs_the_sandbox_as_non_root_healthy_and_stops_cleanly(
        image: str, volume: str) -> None:
    """The default command goes healthy, answers /healthz, runs as uid 10001, exits 0 on SIGTERM."""
    box = Container(image, volume)
    try:
        box.wait_healthy()
        status, body = box.get_json("/healthz")
        assert status == 200
        assert body["ok"] is True
        assert box.exec("stat", "-c", "%u", "/proc/1").stdout.strip() == "10001"  # the daemon
        assert box.stop() == 0, box.logs()
    finally:
        box.remove()


@pytest.mark.slow
@pytest.mark.timeout(BUILD_S + 300)
def test_the_journal_on_the_volume_outlives_the_container(image: str, volume: str) -> None:
    """Halted through the control socket in one container, a new one on the volume starts HALTED."""
    first = Container(image, volume)
    try:
        first.wait_healthy()
        halt = first.exec("trader", "halt", "--socket", "/var/lib/trader/trader.sock",
                          "--reason", "container test")
        assert halt.returncode == 0, halt.stderr
        first.wait_risk_state("HALTED")
        assert first.stop() == 0, first.logs()
    finally:
        first.remove()
    second = Container(image, volume)
    try:
        second.wait_healthy()
        # Starts ACTIVE in memory, then the journal's state arrives: HALTED,
        # and nothing resumes it.
        second.wait_risk_state("HALTED")
    finally:
        second.remove()
