# syntax=docker/dockerfile:1
# One image for the controller (`audiojob-controller`, the default command), the queue-metrics
# service (`python -m controller.queue_metrics`) and the job runner (`audiojob-runner`, which the
# controller's Job builder sets as the container command).
#
#   docker build --build-arg AUDIOJOB_VERSION=0.1.0 -t audiojob-operator:0.1.0 .
#
# Runs as a non-root user with a read-only root filesystem: mount an emptyDir at /tmp (scratch,
# HOME) and the output volume at /data; the runner writes nowhere else.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: the project's wheel and every dependency's, nothing else -------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller ./controller
COPY runner ./runner
# Behind a proxy that intercepts TLS, hand pip the proxy's CA bundle as an (optional) secret:
#   docker build --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt .
# Only this stage talks to PyPI; the runtime stage installs from its wheels with --no-index.
# pip's cache survives between builds (a code change does not download every dependency again).
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
 && python -m pip wheel --wheel-dir /wheels '.[s3]'

# --- runtime: Debian's ffmpeg, the wheels, a non-root user --------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# yt-dlp is pinned here as in pyproject.toml (a test keeps the two equal): sites change and
# yt-dlp follows, so upgrading it is a deliberate, reviewed change of the image.
ARG YT_DLP_VERSION=2026.10.26
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels \
      'audiojob-operator[s3]' "yt-dlp==${YT_DLP_VERSION}"
RUN groupadd --system --gid 10001 audiojob \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin audiojob
# The release version (Chart.yaml's; `make release` and `make image` pass it). Last, so a new
# version reuses every layer above and only the image's config changes.
ARG AUDIOJOB_VERSION=0.0.0-dev
LABEL org.opencontainers.image.title="audiojob-operator" \
      org.opencontainers.image.version="${AUDIOJOB_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# No .pyc writes (the root filesystem is read-only), unbuffered logs, scratch and HOME on /tmp.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    AUDIOJOB_OUTPUT=/data \
    AUDIOJOB_VERSION=${AUDIOJOB_VERSION}
USER 10001:10001
WORKDIR /tmp
CMD ["audiojob-controller"]
