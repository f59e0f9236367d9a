# The collector (edgebench server) for the lab server's compose file. Build context: the repository root.
#   docker compose build collector     (or: docker build -f deploy/compose/collector.Dockerfile -t edgebench-collector .)
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent agent
COPY server server
COPY dashboards dashboards
RUN pip install --no-cache-dir ".[server]" \
    && useradd --system --home-dir /var/lib/edgebench --shell /usr/sbin/nologin edgebench \
    && mkdir -p /var/lib/edgebench && chown edgebench:edgebench /var/lib/edgebench

USER edgebench
WORKDIR /var/lib/edgebench
EXPOSE 8780
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8780/healthz', timeout=4)"
ENTRYPOINT ["edgebench"]
CMD ["server", "--help"]
