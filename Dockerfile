# CPU image of the streambalance service.
# Build:  docker build -t streambalance .
# Run:    docker run -p 127.0.0.1:8000:8000 -e STREAMBALANCE_API_KEY=... \
#           -e REDIS_URL=redis://host:6379/0 streambalance
#         (without REDIS_URL the service starts its embedded valkey-server under /data; the
#         service listens on 0.0.0.0 in the container, so it refuses to start without an API
#         key unless STREAMBALANCE_ALLOW_UNAUTHENTICATED=true says a gateway authenticates)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STREAMBALANCE_DATA_DIR=/data \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependency layer: only pyproject.toml is copied, so editing the source does not
# reinstall torch. torch comes from the CPU wheel index (no CUDA libraries, ~4x smaller);
# the remaining requirements are read from pyproject.toml and find torch already satisfied.
COPY pyproject.toml ./
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Source layer: the package itself, without re-resolving dependencies.
COPY README.md LICENSE ./
COPY models/ models/
COPY service/ service/
RUN pip install --no-deps . \
 && useradd --create-home --uid 10001 --user-group streambalance \
 && mkdir -p /data \
 && chown streambalance:streambalance /data

USER streambalance
WORKDIR /data

EXPOSE 8000

# Liveness only (no Redis round trip): the slim image has no curl, so use the stdlib.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]

CMD ["streambalance", "serve", "--host", "0.0.0.0", "--port", "8000"]
