# syntax=docker/dockerfile:1
# Serving image: onnxruntime + FastAPI + uvicorn, no torch. Build:
#   docker build -t gru-serve .            (models mounted at /models at run time)
#   docker run -p 8000:8000 -v $PWD/models:/models:ro gru-serve
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY pyproject.toml constraints.txt README.md gru_cli.py ./
COPY training ./training
COPY export ./export
COPY service ./service
RUN /opt/venv/bin/pip install --no-cache-dir -c constraints.txt '.[serve]'

FROM ${BASE_IMAGE} AS serve
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --no-create-home gru && mkdir -p /models && chown gru /models
ENV PATH=/opt/venv/bin:$PATH \
    GRU_MODEL_REPOSITORY=/models \
    GRU_HOST=0.0.0.0 \
    GRU_PORT=8000 \
    PYTHONUNBUFFERED=1
USER gru
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD ["python3", "-c", "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"GRU_PORT\"]}/health/ready', timeout=2)"]
CMD ["gru", "serve"]
