# gancli in a container: `docker build -t gancli .`, then `docker run --gpus all --rm gancli train ...`
# (README.md, "Docker", has the volumes and the multi-GPU line).
#
# CUDA 13.0 because the torch gancli declares (>=2.4,<2.15) is 2.14.x on PyPI, a CUDA 13.0 build
# (torch.version.cuda == "13.0"). Its wheels bring their own CUDA runtime, cuBLAS, cuDNN and NCCL
# as pip packages, so the `base` flavour is enough: it adds only the driver hooks (the variables
# NVIDIA's container toolkit reads, including the host driver CUDA 13.0 needs, 580 or newer);
# `cudnn-runtime` would ship a second copy of those libraries. Pinned to a release, not `latest`.
FROM nvidia/cuda:13.0.2-base-ubuntu24.04

# Build-time only (ARG, not ENV), so it does not leak into the running container.
ARG DEBIAN_FRONTEND=noninteractive

# Ubuntu 24.04's Python 3.12 and its venv module. gcc, g++ and the Python headers are for
# `--compile` only: Triton (GPU) and Inductor (CPU) compile small C/C++ helpers at run time.
# Versions are not pinned: the base image's distribution release fixes them, and exact Ubuntu
# package versions are withdrawn from the archive as security updates land, which would break
# the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/*

# A non-root user with uid 1000, the uid most single-user hosts give their first user, so files
# written to a bind-mounted runs/ belong to that user. Ubuntu 24.04 images hold uid 1000 for a
# stock `ubuntu` user, removed first. The directories gancli writes to are world-writable
# (sticky) so that `docker run --user "$(id -u):$(id -g)"` works for any other uid.
RUN if id ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
    && useradd --create-home --uid 1000 --shell /bin/bash gancli \
    && mkdir -p /workspace/runs /data /cache/huggingface /cache/torch /cache/gancli \
    && chown -R gancli:gancli /workspace /cache \
    && chmod 1777 /workspace/runs /cache/huggingface /cache/torch /cache/gancli

# Every download and cache goes under /cache (one volume): HuggingFace (datasets such as MNIST,
# accelerate's config), torch hub (torch-fidelity's Inception weights) and gancli's own cache
# (recipe classifiers, FID reference statistics). No pip cache in the image.
ENV HF_HOME=/cache/huggingface \
    TORCH_HOME=/cache/torch \
    GANCLI_CACHE=/cache/gancli \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/workspace/.venv/bin:$PATH

# gancli writes runs/<model>-<recipe> relative to the working directory, so runs land in
# /workspace/runs, the volume below.
WORKDIR /workspace
# Numeric (uid:gid of gancli above), so a runtime that enforces non-root (Kubernetes'
# runAsNonRoot) can check it without the image's /etc/passwd.
USER 1000:1000

# What the install needs: pyproject.toml, README.md (the package's readme), the package and
# recipes/ (shipped inside it as gancli._recipes, see package-dir in pyproject.toml).
COPY --chown=gancli:gancli pyproject.toml README.md ./
COPY --chown=gancli:gancli gancli/ gancli/
COPY --chown=gancli:gancli recipes/ recipes/

# The install step of README.md's "Set up", unchanged.
RUN python3 -m venv .venv && .venv/bin/pip install -e .

# Inputs (--data /data), the runs, and the caches: mount them to keep them past the container.
VOLUME ["/data", "/workspace/runs", "/cache"]

ENTRYPOINT ["gancli"]
CMD ["--help"]
