# vectorizer-worker image.
#   docker build -t vectorizer .                               # API providers only
#   docker build --build-arg EXTRAS=local,docs -t vectorizer . # + local model and documents
FROM python:3.11-slim AS base

ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY vectorizer ./vectorizer

# CPU-only torch first when an extra needs it, so pip never pulls the CUDA build; never
# torchvision (see the README's install notes).
RUN if echo ",${EXTRAS}," | grep -Eq ',(local|docs|demo|all),'; then \
        pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"; \
    fi \
 && pip install ".${EXTRAS:+[${EXTRAS}]}" \
 && useradd --create-home --uid 10001 vectorizer

USER vectorizer
# the server binds loopback by default; in a container the port must be reachable from outside
ENV VECTORIZER_METRICS_PORT=9464
ENV VECTORIZER_METRICS_HOST=0.0.0.0
EXPOSE 9464

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VECTORIZER_METRICS_PORT','9464'), timeout=4)"

ENTRYPOINT ["vectorizer-worker"]
CMD ["--concurrency", "4"]
