# syntax=docker/dockerfile:1
# The CPU image: every service and stage on a CPU torch (transformers engine).
#   docker build -f Dockerfiles/cpu.Dockerfile -t oct-cpu:0.1.0 .
#   docker run --rm -p 50051:50051 oct-cpu:0.1.0 serve generation
# See Dockerfiles/README.md.
#
# Base image pinned by tag. For byte-for-byte reproducible builds, pin the digest
# too (docker buildx imagetools inspect python:3.11.13-slim-bookworm) and pass
#   --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:${PATH}

RUN python -m venv /opt/venv

WORKDIR /src

# The CPU build of torch (requirements/constraints.txt pins the version; its local
# wheel does not exist here, so it comes from the PyTorch CPU index instead of
# PyPI's multi-GB CUDA build).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY requirements/ requirements/
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" \
        "$(grep -E '^torch==' requirements/constraints.txt)" \
 && pip install --no-cache-dir -c requirements/constraints.txt -r requirements/lock.txt \
 && if [ -f requirements/nodeps.txt ]; then \
        pip install --no-cache-dir --no-deps -r requirements/nodeps.txt; \
    fi

# The project itself (dependencies are all installed above, from the lock).
COPY pyproject.toml ./
COPY libs/ libs/
COPY services/ services/
COPY proto/ proto/
RUN pip install --no-cache-dir --no-deps . \
 && pip check \
 && oct --help > /dev/null

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="oct-cpu" \
      org.opencontainers.image.description="Open character training: services and stages on CPU" \
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
    XDG_CACHE_HOME=/var/lib/oct/cache

USER 10001:10001
WORKDIR /home/oct

# gRPC: controller 50050, generation 50051, introspection 50052, training 50053,
# evaluation 50054; Prometheus metrics on gRPC port + 1000.
EXPOSE 50050-50054 51050-51054

# The service (or stage) is chosen by the arguments:
#   oct serve controller|generation|introspection|training|evaluation
#   oct stage NAME --run RUN_ID --store URI
ENTRYPOINT ["oct"]
CMD ["serve", "controller"]
