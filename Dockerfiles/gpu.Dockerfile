# syntax=docker/dockerfile:1
# The GPU image: vLLM's CUDA image with the project installed (its `vllm` extra),
# for generation and training (and any GPU stage).
#   docker build -f Dockerfiles/gpu.Dockerfile -t oct-gpu:0.1.0 .
#   docker run --rm --gpus all -p 50051:50051 oct-gpu:0.1.0 serve generation
# See Dockerfiles/README.md.
#
# Base image pinned by tag (vLLM 0.33.0 with its own CUDA torch and transformers).
# For reproducible builds pin the digest too:
#   --build-arg VLLM_IMAGE=vllm/vllm-openai:v0.33.0@sha256:<digest>
ARG VLLM_IMAGE=vllm/vllm-openai:v0.33.0

# ---------------------------------------------------------------- builder
FROM ${VLLM_IMAGE} AS builder

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A venv that sees the base image's packages (vllm, CUDA torch, transformers), so
# only what vLLM lacks is added, into /opt/venv.
RUN python3 -m venv --system-site-packages /opt/venv
ENV PATH=/opt/venv/bin:${PATH}

WORKDIR /src
COPY requirements/ requirements/

# Constraints: everything the base image ships stays at its version (vLLM pins its
# own torch and transformers; the CPU torch pin of requirements/constraints.txt does
# not apply here), and the rest comes from requirements/lock.txt.
RUN pip list --format=freeze > /tmp/base-pins.txt \
 && sed -E 's/==.*//' /tmp/base-pins.txt | tr 'A-Z_' 'a-z-' | sort -u > /tmp/base-names.txt \
 && grep -vE '^[[:space:]]*(#|$)' requirements/lock.txt \
    | awk 'NR==FNR { base[$0]; next } { n = tolower($0); sub(/[=<>!~ ;\[].*/, "", n); gsub(/_/, "-", n); if (!(n in base)) print }' \
        /tmp/base-names.txt - > /tmp/lock-rest.txt \
 && cat /tmp/lock-rest.txt

COPY pyproject.toml ./
COPY libs/ libs/
COPY services/ services/
COPY proto/ proto/
RUN pip install --no-cache-dir -c /tmp/base-pins.txt -c /tmp/lock-rest.txt ".[vllm]" \
 && if [ -f requirements/nodeps.txt ]; then \
        pip install --no-cache-dir --no-deps -r requirements/nodeps.txt; \
    fi \
 && pip check \
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
# evaluation 50054; Prometheus metrics on gRPC port + 1000.
EXPOSE 50050-50054 51050-51054

# The base image's entrypoint (`vllm serve`) is replaced: the service or stage is
# chosen by the arguments, e.g. `serve training` or `stage dpo --run R --store URI`.
ENTRYPOINT ["oct"]
CMD ["serve", "generation"]
