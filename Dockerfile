# syntax=docker/dockerfile:1
# gru-serve images, one Dockerfile, three targets (README "Deployment"):
#   serve       (default) CPU serving: onnxruntime + FastAPI + uvicorn, no torch, no training/export code
#   serve-cuda  GPU serving: onnxruntime-gpu on an NVIDIA CUDA + cuDNN runtime base (GRU_EXECUTION_PROVIDER=cuda)
#   train       offline job: torch (CPU) for `gru train` and `gru export`, writing to mounted volumes
#
#   docker build -t gru-serve .
#   docker run -p 8000:8000 -p 8001:8001 -v "$PWD/models:/models:ro" gru-serve   (8001: gRPC, GRU_GRPC_PORT)
#   docker build --build-arg MODELS_DIR=models -t gru-serve:baked .    (models baked into /models)
#
# BASE_IMAGE must hold Python 3.11+ with venv (the official slim image, or a local Debian one: the build
# uses `python3 -m venv` and the venv's own pip, never a fixed interpreter path).
ARG BASE_IMAGE=python:3.11-slim
ARG CUDA_BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

# ---- serving venv: only service/ and gru_cli.py are copied, so only they are installed -------------------
FROM ${BASE_IMAGE} AS serve-build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md gru_cli.py ./
COPY service ./service
# Then out of the finished venv: pip and setuptools (the image never installs anything again) and the
# packages' own test suites (34 MB: onnx's test models, numpy's tests), which nothing imports.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt '.[serve]' \
 && /opt/venv/bin/python -m pip uninstall --yes --quiet pip setuptools \
 && find /opt/venv/lib -depth -type d \( -name tests -o -path '*/onnx/backend/test' \) -exec rm -rf {} +

# ---- CPU serving image (the default target: the last stage, serve, is this one) -------------------------
FROM ${BASE_IMAGE} AS serve-runtime
COPY --from=serve-build /opt/venv /opt/venv
# MODELS_DIR (a folder of the build context, e.g. models): baked into /models, read-only for the server.
# Empty: models are mounted at /models at run time.
ARG MODELS_DIR=""
# The gru user has a home: onnxruntime keeps state there, and without one its first log line was an
# ANSI-coloured warning, not a JSON object (every log line is one; scripts/container_test.py checks).
RUN --mount=type=bind,target=/context \
    useradd --system --uid 10001 --create-home --home-dir /home/gru --shell /usr/sbin/nologin gru \
 && mkdir -p /models \
 && if [ -n "$MODELS_DIR" ]; then cp -R "/context/$MODELS_DIR/." /models/ && chmod -R a+rX /models; fi
ENV PATH=/opt/venv/bin:$PATH \
    GRU_MODEL_REPOSITORY=/models \
    GRU_HOST=0.0.0.0 \
    GRU_PORT=8000 \
    GRU_GRPC_PORT=8001 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER gru
# 8000: REST (native and Open Inference Protocol); 8001: the Open Inference Protocol over gRPC (Triton's ports).
EXPOSE 8000 8001
# Ready (GET /health/ready) once start-up finished and a model serves, warmed up; a bundle that fails to load
# is reported in /v2/repository/index and does not hold readiness back.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python3", "-c", "import os,urllib.request as u; u.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('GRU_PORT', '8000'), timeout=2)"]
CMD ["gru", "serve"]

# ---- training job image: torch (CPU build), gru train / gru export into mounted volumes ------------------
FROM ${BASE_IMAGE} AS train
# The default index for torch is the CPU build's (PyPI's torch pulls multi-GB CUDA libraries). Offline or
# behind a mirror: --build-arg PIP_EXTRA_ARGS="--find-links /wheels" (with the folder mounted in the build).
ARG PIP_EXTRA_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
WORKDIR /src
COPY pyproject.toml constraints.txt README.md gru_cli.py ./
COPY training ./training
COPY export ./export
COPY service ./service
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_EXTRA_ARGS} \
        -c constraints.txt '.[export]' \
 && rm -rf /src \
 && useradd --uid 10001 --create-home --shell /bin/sh gru \
 && mkdir -p /runs /models && chown gru /runs /models
COPY examples /work/examples
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache
USER gru
WORKDIR /work
VOLUME ["/runs", "/models"]
CMD ["gru", "--help"]

# ---- GPU serving image: onnxruntime-gpu on CUDA + cuDNN -------------------------------------------------
# onnxruntime-gpu from PyPI is built for one CUDA major version and cuDNN 9 (1.31: CUDA 13.x); the base
# must match it and the host driver must support that CUDA (CUDA 13: driver >= 580). For a CUDA 12 host
# pass an onnxruntime-gpu release built for CUDA 12 and a 12.x cudnn-runtime base.
FROM ${CUDA_BASE_IMAGE} AS serve-cuda
ARG ONNXRUNTIME_GPU=onnxruntime-gpu==1.31.1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md gru_cli.py ./
COPY service ./service
# onnxruntime and onnxruntime-gpu ship the same `onnxruntime` module: the serve extra brings the CPU one,
# which is removed before the GPU one goes in.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt '.[serve]' \
 && /opt/venv/bin/pip uninstall --yes onnxruntime \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check "${ONNXRUNTIME_GPU}" \
 && /opt/venv/bin/python -m pip uninstall --yes --quiet pip \
 && find /opt/venv/lib -depth -type d \( -name tests -o -path '*/onnx/backend/test' \) -exec rm -rf {} + \
 && rm -rf /src \
 && useradd --system --uid 10001 --create-home --home-dir /home/gru --shell /usr/sbin/nologin gru \
 && mkdir -p /models && chown gru /models
WORKDIR /
ENV PATH=/opt/venv/bin:$PATH \
    GRU_MODEL_REPOSITORY=/models \
    GRU_HOST=0.0.0.0 \
    GRU_PORT=8000 \
    GRU_GRPC_PORT=8001 \
    GRU_EXECUTION_PROVIDER=cuda \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER gru
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os,urllib.request as u; u.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('GRU_PORT', '8000'), timeout=2)"]
CMD ["gru", "serve"]

# ---- default target ----------------------------------------------------------------------------------
FROM serve-runtime AS serve
