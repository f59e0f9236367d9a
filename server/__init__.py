"""edgebench.server: the collector (MQTT ingest, InfluxDB storage, model registry, job queue, gates)."""
