# Supernode built-in engine on Ascend NPUs (910B / 910C A3 / 950; HCCL between the ranks of a group).
#   docker build -f docker/engine-ascend.Dockerfile -t ghcr.io/supernode-io/supernode-engine-ascend:0.1.0 .
#   A2 (910B) nodes: --build-arg CANN_IMAGE=quay.io/ascend/cann:8.2.rc1-910b-ubuntu22.04-py3.11
# The NPU driver is mounted from the host by the Ascend device plugin; the image carries CANN.
ARG CANN_IMAGE=quay.io/ascend/cann:8.2.rc1-a3-ubuntu22.04-py3.11

FROM ${CANN_IMAGE}
LABEL org.opencontainers.image.title="supernode-engine-ascend" \
      org.opencontainers.image.source="https://github.com/supernode-io/supernode" \
      org.opencontainers.image.licenses="Apache-2.0"
# What CANN's set_env.sh exports, as ENV: the operator starts `supernode engine serve` directly,
# without a shell that could source it.
ENV ASCEND_TOOLKIT_HOME=/usr/local/Ascend/ascend-toolkit/latest
ENV ASCEND_HOME_PATH=${ASCEND_TOOLKIT_HOME} \
    ASCEND_AICPU_PATH=${ASCEND_TOOLKIT_HOME} \
    ASCEND_OPP_PATH=${ASCEND_TOOLKIT_HOME}/opp \
    TOOLCHAIN_HOME=${ASCEND_TOOLKIT_HOME}/toolkit \
    LD_LIBRARY_PATH=${ASCEND_TOOLKIT_HOME}/lib64:${ASCEND_TOOLKIT_HOME}/lib64/plugin/opskernel:${ASCEND_TOOLKIT_HOME}/lib64/plugin/nnengine:/usr/local/Ascend/driver/lib64/common:/usr/local/Ascend/driver/lib64/driver:${LD_LIBRARY_PATH} \
    PYTHONPATH=${ASCEND_TOOLKIT_HOME}/python/site-packages:${ASCEND_TOOLKIT_HOME}/opp/built-in/op_impl/ai_core/tbe:${PYTHONPATH} \
    PATH=${ASCEND_TOOLKIT_HOME}/bin:${ASCEND_TOOLKIT_HOME}/compiler/ccec_compiler/bin:${PATH}
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY crds/ crds/
COPY kube/ kube/
COPY httpserver/ httpserver/
COPY operator/ operator/
COPY router/ router/
COPY engine/ engine/
COPY cli/ cli/
# torch-npu must match torch exactly (shared/SETUP.md); both pinned, CPU torch wheel + the NPU plugin.
RUN python3 -m venv --system-site-packages /opt/supernode \
 && /opt/supernode/bin/pip install --no-cache-dir --upgrade pip==25.3 \
 && /opt/supernode/bin/pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && /opt/supernode/bin/pip install --no-cache-dir torch-npu==2.13.0 '.[engine]' \
 && rm -rf /src
# HwHiAiUser (CANN's device group, when the base image has it) may open /dev/davinci*.
RUN groupadd --gid 10001 supernode \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin supernode \
 && if getent group HwHiAiUser >/dev/null; then usermod -aG HwHiAiUser supernode; fi
WORKDIR /
ENV PATH=/opt/supernode/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SUPERNODE_DEVICE=npu
USER 10001:10001
EXPOSE 8000 29500
ENTRYPOINT ["supernode"]
CMD ["engine", "serve"]
