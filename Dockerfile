# syntax=docker/dockerfile:1
# Targets: `cpu` (default, last stage; same as `runtime`), `gpu` (CUDA 13 + cuDNN 9 +
# onnxruntime-gpu), `loadtest` (locust).
ARG PYTHON_VERSION=3.11
# CUDA 13: what onnxruntime-gpu >= 1.27 is built for (the `gpu` extra's range; a test checks
# the two agree). Hosts need NVIDIA driver R580 or newer (docs/deploy.md).
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- CPU virtualenv
FROM python:${PYTHON_VERSION}-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies in their own layer: rebuilt only when pyproject.toml changes. The CPU
# onnxruntime: the `cpu` extra.
COPY pyproject.toml ./
RUN python -c "import tomllib; d=tomllib.load(open('pyproject.toml','rb'))['project']; print('\n'.join(d['dependencies'] + d['optional-dependencies']['cpu']))" > requirements.txt \
    && pip install -r requirements.txt
COPY README.md ./
COPY service ./service
RUN pip install --no-deps .

# ---------------------------------------------------------------- CPU runtime
# Named stages that compose builds come before the CUDA stages: the classic builder walks
# every stage up to its target, and should not need the CUDA base image for a CPU build.
FROM python:${PYTHON_VERSION}-slim AS runtime
RUN useradd --system --uid 10001 --user-group --no-create-home embed \
    && mkdir -p /models && chown embed:embed /models
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    EMBED_MODELS=/models EMBED_HOST=0.0.0.0 EMBED_PORT=8000 EMBED_WORKERS=1
USER 10001:10001
# The demo tables, written as the service user: `docker run` without a mounted model
# repository serves them; a folder mounted on /models hides them.
RUN python -m service.repository.demo /models
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=4s --start-period=30s --retries=3 CMD ["embedding-service", "probe"]
# Exec form: SIGTERM reaches the server, which drains in-flight requests within EMBED_DRAIN_SECONDS
# (30 s) and exits (non-zero if it had to cut requests).
ENTRYPOINT ["embedding-service", "serve"]

# ---------------------------------------------------------------- load generator
FROM python:${PYTHON_VERSION}-slim AS loadtest
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install "locust>=2.29,<3" "numpy>=1.26,<3" \
    && useradd --system --uid 10001 --user-group --no-create-home locust
COPY loadtest/locustfile.py /locust/locustfile.py
WORKDIR /locust
USER 10001:10001
EXPOSE 8089
ENTRYPOINT ["locust", "-f", "/locust/locustfile.py"]

# ---------------------------------------------------------------- GPU virtualenv
# Built inside the CUDA image so the venv's interpreter paths match the runtime stage.
FROM ${CUDA_IMAGE} AS gpu-builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=3.12.* python3-venv=3.12.* \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
# The `gpu` extra: onnxruntime-gpu, the only onnxruntime here (both builds install the same
# module); the image's CUDA and cuDNN are the system's, found by onnxruntime.preload_dlls().
RUN python -c "import tomllib; d=tomllib.load(open('pyproject.toml','rb'))['project']; print('\n'.join(d['dependencies'] + d['optional-dependencies']['gpu']))" > requirements.txt \
    && pip install -r requirements.txt \
    && python -c "from importlib.metadata import distributions as d; b=sorted(x.metadata['Name'] for x in d() if x.metadata['Name'].startswith('onnxruntime')); assert b == ['onnxruntime-gpu'], b"
COPY README.md ./
COPY service ./service
RUN pip install --no-deps .

# ---------------------------------------------------------------- GPU runtime
FROM ${CUDA_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=3.12.* \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home embed \
    && mkdir -p /models && chown embed:embed /models
COPY --from=gpu-builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    EMBED_MODELS=/models EMBED_HOST=0.0.0.0 EMBED_PORT=8000 EMBED_WORKERS=1
USER 10001:10001
RUN python -m service.repository.demo /models
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=4s --start-period=60s --retries=3 CMD ["embedding-service", "probe"]
ENTRYPOINT ["embedding-service", "serve"]

# ---------------------------------------------------------------- default target: the CPU image
FROM runtime AS cpu
LABEL org.opencontainers.image.title="embedding-service" \
      org.opencontainers.image.description="Embedding lookup service (CPU, onnxruntime)"
