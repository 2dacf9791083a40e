# Supernode control plane: operator + router (`supernode operator`, `supernode router`). No torch.
#   docker build -f docker/control-plane.Dockerfile -t ghcr.io/supernode-io/supernode-control-plane:0.1.0 .
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
# Base install only (operator + router); the engine extra (torch) is deliberately absent.
# A C compiler builds the router's C prompt encoder (supernode.api._fasttokens); the import below fails the build without it.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential=12.9 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/supernode \
 && /opt/supernode/bin/pip install --no-cache-dir --upgrade pip==25.3 \
 && /opt/supernode/bin/pip install --no-cache-dir . \
 && ! /opt/supernode/bin/python -c "import torch" 2>/dev/null \
 && /opt/supernode/bin/python -c "import supernode.api._fasttokens"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="supernode-control-plane" \
      org.opencontainers.image.source="https://github.com/supernode-io/supernode" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 supernode \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin supernode
COPY --from=build /opt/supernode /opt/supernode
ENV PATH=/opt/supernode/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["supernode"]
CMD ["--help"]
