# syntax=docker/dockerfile:1
# One image for every part: `triggers run ingest|inbox|writer`, `triggers init`, `triggers dlq ...`.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY ingest_api ./ingest_api
COPY writer_worker ./writer_worker
COPY inbox_api ./inbox_api
COPY triggers_client ./triggers_client
RUN python -m venv /opt/triggers && /opt/triggers/bin/pip install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin triggers
COPY --from=build /opt/triggers /opt/triggers
ENV PATH=/opt/triggers/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRIGGERS_HOST=0.0.0.0
USER triggers
EXPOSE 8000 8001
ENTRYPOINT ["triggers"]
CMD ["--help"]
