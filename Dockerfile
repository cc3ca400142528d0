# gpubroker service image. With DATABASE_URL set it uses that PostgreSQL and never starts the
# embedded one (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY providers ./providers
COPY pricing ./pricing
COPY migrations ./migrations
COPY api ./api
COPY web ./web
RUN pip install --no-cache-dir . && useradd --create-home gpubroker
USER gpubroker
ENV GPUBROKER_HOST=0.0.0.0 GPUBROKER_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=6 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz').status != 200)"
CMD ["gpubroker", "serve"]
