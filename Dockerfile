# woolly_grpc server image. Build: `docker build -t woolly-grpc .`
# Run:   docker run -p 50051:50051 -p 9464:9464 -v "$PWD/examples/repos:/repos:ro" woolly-grpc
# Settings are WOOLLY_* variables (docs/operations.md); arguments after the image name are
# `woolly-grpc serve` flags (e.g. `--model openai:gpt-4o-mini`).

# --- build: a virtualenv with the package and its dependencies (all from wheels) ---------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY woolly_grpc ./woolly_grpc
RUN pip install --no-cache-dir /src

# --- run: the virtualenv on a clean slim image, no pip cache, no sources, no build tools ---------
FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WOOLLY_REPOS_ROOT=/repos \
    WOOLLY_DATABASE_URL=sqlite:////data/woolly.db \
    WOOLLY_LOG_FORMAT=json
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin woolly \
    && mkdir -p /repos /data \
    && chown woolly:woolly /data
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /data
EXPOSE 50051 9464
# The gRPC health service, asked by the image's own Python (no probe binary needed). It speaks
# plaintext: with WOOLLY_TLS_CERT set, probe from outside (Kubernetes' gRPC probes, deploy/k8s).
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; channel = grpc.insecure_channel('127.0.0.1:' + os.environ.get('WOOLLY_PORT', '50051')); status = g.HealthStub(channel).Check(h.HealthCheckRequest(), timeout=3).status; sys.exit(0 if status == h.HealthCheckResponse.SERVING else 1)"]
# Exec form: the server is PID 1 and gets SIGTERM itself (health NOT_SERVING, then a graceful
# drain of WOOLLY_SHUTDOWN_GRACE_S).
ENTRYPOINT ["woolly-grpc", "serve"]
