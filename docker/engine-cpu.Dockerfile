# Supernode built-in engine on CPU (gloo between the ranks of a group): `supernode engine serve`.
#   docker build -f docker/engine-cpu.Dockerfile -t ghcr.io/supernode-io/supernode-engine-cpu:0.1.0 .
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
# torch from the CPU index first (the PyPI default wheel pulls CUDA), pinned to the engine extra's version.
# A C compiler builds the router's C prompt encoder (supernode.api._fasttokens); the import below fails the build without it.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential=12.9 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/supernode \
 && /opt/supernode/bin/pip install --no-cache-dir --upgrade pip==25.3 \
 && /opt/supernode/bin/pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && /opt/supernode/bin/pip install --no-cache-dir '.[engine]' \
 && /opt/supernode/bin/python -c "import supernode.api._fasttokens"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="supernode-engine-cpu" \
      org.opencontainers.image.source="https://github.com/supernode-io/supernode" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 supernode \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin supernode
COPY --from=build /opt/supernode /opt/supernode
ENV PATH=/opt/supernode/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SUPERNODE_DEVICE=cpu
USER 10001:10001
EXPOSE 8000 29500
ENTRYPOINT ["supernode"]
CMD ["engine", "serve"]
