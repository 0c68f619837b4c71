# syntax=docker/dockerfile:1
#
# unetgeo: CPU image by default; a CUDA image with build arguments.
#
#   docker build -t unetgeo:cpu .
#   docker build -t unetgeo:cuda \
#       --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#       --build-arg TORCH_INDEX_URL=https://pypi.org/simple .      # PyPI's torch wheels are the CUDA builds
#
#   docker run --rm -v "$PWD/data:/data" unetgeo:cpu run /data/scene.tif --model /data/models/flood --out /data/runs/x
#   docker run --rm --gpus all -v "$PWD/data:/data" unetgeo:cuda predict /data/scene.tif --model /data/m --out /data/r --device cuda
#   # a Prefect worker (the deployments' working directory /app holds flows/ and configs/):
#   docker run --rm -e PREFECT_API_URL=http://prefect:4200/api --entrypoint prefect unetgeo:cpu \
#       worker start --pool unetgeo-process
#
# Versions come from constraints.txt (the same pins as `make install`); nothing is compiled.

ARG BASE_IMAGE=python:3.11.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG APP_UID=10001

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Python 3.11: already in python:* images; from the distribution on CUDA (Ubuntu 22.04) bases.
# hadolint ignore=DL3008
RUN if ! command -v python3.11 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3.11 -m venv "${VIRTUAL_ENV}" \
    && groupadd --gid "${APP_UID}" unetgeo \
    && useradd --create-home --uid "${APP_UID}" --gid "${APP_UID}" --shell /usr/sbin/nologin unetgeo \
    && mkdir -p /data && chown unetgeo:unetgeo /data

WORKDIR /app

# 1. torch and torchvision at the pinned versions from the CPU (or given) index; their own
#    dependencies at the pinned versions from PyPI. (2.15.0+cpu satisfies the pin torch==2.15.0.)
COPY constraints.txt ./
# hadolint ignore=SC2086
RUN torch_pins="$(grep -E '^(torch|torchvision)==' constraints.txt | tr '\n' ' ')" \
    && test -n "${torch_pins}" \
    && pip install --no-cache-dir -c constraints.txt \
        ${TORCH_INDEX_URL:+--index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple} ${torch_pins}

# 2. the other dependencies (a layer that survives source edits): install the project from its
#    metadata with empty packages, then drop the project itself
COPY pyproject.toml README.md ./
# hadolint ignore=DL3013
RUN mkdir -p unetgeo flows \
    && touch unetgeo/__init__.py flows/__init__.py \
    && pip install --no-cache-dir -c constraints.txt . \
    && pip uninstall -y unetgeo \
    && rm -rf unetgeo flows build ./*.egg-info

# 3. the project (configs/ and flows/ stay in /app: deployments run with /app as working directory)
COPY . .
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-deps -c constraints.txt . \
    && rm -rf build ./*.egg-info \
    && python -c "import unetgeo.cli, flows.scene_to_polygons" \
    && unetgeo --help >/dev/null

ENV PREFECT_LOGGING_EXTRA_LOGGERS=unetgeo \
    PREFECT_HOME=/home/unetgeo/.prefect \
    MPLCONFIGDIR=/tmp/matplotlib

USER ${APP_UID}:${APP_UID}
VOLUME ["/data"]

ENTRYPOINT ["unetgeo"]
CMD ["--help"]
