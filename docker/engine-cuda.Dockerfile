# Supernode built-in engine on NVIDIA GPUs (NCCL between the ranks of a group).
#   docker build -f docker/engine-cuda.Dockerfile -t ghcr.io/supernode-io/supernode-engine-cuda:0.1.0 .
# The cu128 torch wheel carries the CUDA runtime, cuDNN and NCCL as pinned pip dependencies, so the base
# is plain Python; the host's driver comes in through the NVIDIA container toolkit (device plugin).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY crds/ crds/
COPY kube/ kube/
COPY httpserver/ httpserver/
COPY operator/ operator/
COPY router/ router/
COPY engine/ engine/
COPY cli/ cli/
# A C compiler builds the router's C prompt encoder (supernode.api._fasttokens); the import below fails the build without it.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential=12.9 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/supernode \
 && /opt/supernode/bin/pip install --no-cache-dir --upgrade pip==25.3 \
 && /opt/supernode/bin/pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cu128 torch==2.13.0 \
 && /opt/supernode/bin/pip install --no-cache-dir '.[engine]' \
 && /opt/supernode/bin/python -c "import supernode.api._fasttokens"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="supernode-engine-cuda" \
      org.opencontainers.image.source="https://github.com/supernode-io/supernode" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 supernode \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin supernode
COPY --from=build /opt/supernode /opt/supernode
ENV PATH=/opt/supernode/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    SUPERNODE_DEVICE=cuda
USER 10001:10001
EXPOSE 8000 29500
ENTRYPOINT ["supernode"]
CMD ["engine", "serve"]
