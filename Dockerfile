# verbcal serve: fitted calibrators over HTTP (see docs/serving.md).
# Not built on the development machine (no container runtime there).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install ".[serve]" && useradd --system --uid 10001 --no-create-home verbcal
USER verbcal

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"

# Keys: -e VERBCAL_API_KEYS=... or mount a file and add --api-keys-file.
ENTRYPOINT ["verbcal", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--help"]
