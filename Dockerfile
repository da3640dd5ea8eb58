# trader in a container: the daemon with its metrics/health endpoint on 9108.
#
#   docker build -t trader .
#   docker run --rm -p 127.0.0.1:9108:9108 -v trader-data:/var/lib/trader trader
#
# The default command runs config/sandbox.toml: the embedded Alpaca-compatible
# sandbox, no keys, no network. For paper trading mount a config and pass the
# keys as APCA_API_KEY_ID / APCA_API_SECRET_KEY (or files under a mounted
# $CREDENTIALS_DIRECTORY):
#   docker run ... -v ./paper.toml:/etc/trader/paper.toml:ro trader \
#     trader run --config /etc/trader/paper.toml --set 'http.listen="0.0.0.0:9108"'

# --- builder: a virtualenv with trader and its dependencies --------------------------
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/trader/.venv
ENV PATH=/opt/trader/.venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so editing the code does not
# reinstall them (`pip install .` after `COPY trader` would redo this layer on
# every code change). pip check fails the build if the two ever disagree.
COPY pyproject.toml README.md ./
RUN pip install --upgrade pip \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
       > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY trader ./trader
RUN pip install --no-deps . && pip check

# --- runtime: the venv, the configs and the bundled data; nothing to build with -----
FROM python:3.11-slim AS runtime
ENV PATH=/opt/trader/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NO_PROXY=127.0.0.1,localhost
RUN groupadd --system --gid 10001 trader \
    && useradd --system --uid 10001 --gid trader --home-dir /var/lib/trader \
       --shell /usr/sbin/nologin trader \
    && mkdir -p /var/lib/trader \
    && chown trader:trader /var/lib/trader \
    && chmod 700 /var/lib/trader
COPY --from=builder /opt/trader/.venv /opt/trader/.venv
WORKDIR /opt/trader
COPY config ./config
COPY replay_data ./replay_data
# The data loader writes its numpy cache next to the data.
RUN chown -R trader:trader /opt/trader/replay_data

# The journal (SQLite) lives on a volume: it is the daemon's memory across
# restarts (start-up reconciliation reads it).
VOLUME /var/lib/trader
USER trader:trader
EXPOSE 9108

# Liveness from /healthz, with the standard library (slim has no curl).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4).status == 200 else 1)"]

# SIGTERM drains within [run] shutdown_deadline_s (10 s): give `docker stop` 30.
# Everything the daemon writes goes to the volume: the working directory is
# root's, so the default runs/ paths would fail with EACCES as user trader.
# Operator commands: docker exec <container> trader halt --socket /var/lib/trader/trader.sock
STOPSIGNAL SIGTERM
CMD ["trader", "run", "--config", "config/sandbox.toml", \
     "--set", "run.db=\"/var/lib/trader/sandbox.db\"", \
     "--set", "run.control_socket=\"/var/lib/trader/trader.sock\"", \
     "--set", "http.listen=\"0.0.0.0:9108\""]
