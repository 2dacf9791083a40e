# Supernode built-in engine on NVIDIA GPUs (NCCL between the ranks of a group).
#   docker build -f docker/engine-cuda.Dockerfile -t ghcr.io/supernode-io/supernode-engine-cuda:0.1.0 .
# The host's driver comes in through the NVIDIA container toolkit; the image carries the CUDA runtime.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE}
LABEL org.opencontainers.image.title="supernode-engine-cuda" \
      org.opencontainers.image.source="https://github.com/supernode-io/supernode" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12=3.12.3-1ubuntu0.9 python3.12-venv=3.12.3-1ubuntu0.9 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY crds/ crds/
COPY operator/ operator/
COPY router/ router/
COPY engine/ engine/
COPY cli/ cli/
RUN python3.12 -m venv /opt/supernode \
 && /opt/supernode/bin/pip install --no-cache-dir --upgrade pip==25.3 \
 && /opt/supernode/bin/pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cu128 torch==2.13.0 \
 && /opt/supernode/bin/pip install --no-cache-dir '.[engine]' \
 && rm -rf /src
RUN groupadd --gid 10001 supernode \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin supernode
WORKDIR /
ENV PATH=/opt/supernode/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SUPERNODE_DEVICE=cuda
USER 10001:10001
EXPOSE 8000 29500
ENTRYPOINT ["supernode"]
CMD ["engine", "serve"]
