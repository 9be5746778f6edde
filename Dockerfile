# crdt-server: Yjs-compatible collaborative coding-interview server.
# Build and run (README "Deploying", "Docker"):
#   docker build -t crdt-server .
#   docker run -p 3000:3000 -v crdt-data:/data crdt-server
# Run answers 503 as this default non-root user; for the full code sandbox (namespaces, per-run uids,
# cgroups) run as root inside with Docker's restrictions lifted and an init that reaps orphans:
#   docker run -p 3000:3000 -v crdt-data:/data --init --user 0 \
#     --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
#     --security-opt systempaths=unconfined --cgroupns host crdt-server
# Backups beside the live container: docker exec <container> crdt-server backup /data/backup-YYYY-MM-DD
# Builder stage: the interview page (npm ci + esbuild). Only its output reaches the final image.
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/build.mjs ./
COPY web/src ./src
RUN node build.mjs --outdir /out/bundle-image

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PATH=/app/.venv/bin:$PATH \
    CRDT_SERVER_HOST=0.0.0.0 \
    CRDT_SERVER_PORT=3000 \
    CRDT_SERVER_DATA_DIR=/data \
    CRDT_SERVER_WEB_DIR=/app/web \
    CRDT_SERVER_WEB_BUILD=off

# Runtimes for candidates' code (python is the base image's) and the sandbox itself.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap libseccomp2 nodejs \
    && rm -rf /var/lib/apt/lists/*

RUN pip install --no-cache-dir uv==0.13.9

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY crdt_server ./crdt_server
RUN uv sync --frozen --no-dev
# The built interview page (hashed files, licences, manifest); no npm, no node_modules.
COPY --from=web /out /app/web

RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin crdt \
    && mkdir -p /data && chown crdt /data
VOLUME ["/data"]
USER 10001

EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('CRDT_SERVER_PORT', '3000'), timeout=4)"]
CMD ["crdt-server"]
