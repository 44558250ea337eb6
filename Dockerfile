# syntax=docker/dockerfile:1
# One image for every part: `triggers run ingest|inbox|writer`, `triggers init`, `triggers dlq ...`.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Pinned: every package at its version in the runtime lock, checked against its hashes
# (scripts/lock refreshes it). A layer of its own, rebuilt only when the lock changes.
COPY requirements/runtime.txt ./requirements/
RUN python -m venv /opt/triggers \
    && /opt/triggers/bin/pip install --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY ingest_api ./ingest_api
COPY writer_worker ./writer_worker
COPY inbox_api ./inbox_api
COPY triggers_client ./triggers_client
# The client distribution, then the service: nothing resolved (the lock has it all), built
# with the lock's setuptools; pip check fails the build if the lock and the code disagree.
RUN /opt/triggers/bin/pip install --no-deps --no-build-isolation ./triggers_client . \
    && /opt/triggers/bin/pip check
COPY docker/healthcheck.py /opt/triggers/healthcheck.py

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin triggers
COPY --from=build /opt/triggers /opt/triggers
ENV PATH=/opt/triggers/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRIGGERS_HOST=0.0.0.0
USER triggers
EXPOSE 8000 8001
# Liveness of whichever part this container runs: ingest's or inbox's /status, the writer's
# /metrics when TRIGGERS_METRICS_PORT is set (docker/healthcheck.py; no curl in slim images).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/opt/triggers/healthcheck.py"]
ENTRYPOINT ["triggers"]
CMD ["--help"]
