# Kairos gateway image: the gateway package and its dependencies only (no UI, no dev
# tools), run as a non-root user, stopped by SIGTERM with a drain.
#
#   docker build -t kairos-gateway .
#   docker run -p 5900:5900 -v "$PWD/config.json:/etc/kairos/config.json" kairos-gateway
#
# See docs/operations.md ("Running as a service").
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1

RUN pip install --no-cache-dir "uv==0.13.10" \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin kairos \
    && mkdir -p /etc/kairos \
    && chown kairos /etc/kairos

WORKDIR /app
# The workspace as locked; uv.lock also names the example plugins (a dev dependency).
COPY pyproject.toml uv.lock README.md ./
COPY packages ./packages
COPY examples/plugins ./examples/plugins
RUN uv sync --locked --no-dev --package kairos-gateway

# The example configuration; mount your own over it. The directory is the gateway
# user's: the management API saves route changes to this file.
COPY --chown=kairos examples/config.json /etc/kairos/config.json

USER kairos
ENV KAIROS_HOST=0.0.0.0 \
    KAIROS_PORT=5900 \
    KAIROS_CONFIG_PATH=/etc/kairos/config.json \
    KAIROS_LOG_FORMAT=json
EXPOSE 5900

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5900/live', timeout=2)"]

# The gateway itself is PID 1 (exec form, no shell or uv in between): `docker stop`
# sends it SIGTERM, it drains for KAIROS_DRAIN_TIMEOUT_S (15 s; keep docker's
# --stop-timeout above it) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/app/.venv/bin/kairos-gateway"]
