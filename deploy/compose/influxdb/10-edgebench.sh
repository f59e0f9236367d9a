#!/bin/sh
# InfluxDB 2.x first start (run once by the influxdb image from /docker-entrypoint-initdb.d, after its setup, with
# the influx CLI already logged in as the admin): map the v1 database "edgebench" (retention policy autogen) to the
# bucket, so the collector's v1 /write and Grafana's InfluxQL /query reach it, and create the v1 users they log
# in with: the collector reads and writes, Grafana only reads.
set -eu

org=${DOCKER_INFLUXDB_INIT_ORG:?}
bucket_id=${DOCKER_INFLUXDB_INIT_BUCKET_ID:?}
db=${EDGEBENCH_INFLUX_DB:-edgebench}

influx v1 dbrp create --org "$org" --bucket-id "$bucket_id" --db "$db" --rp autogen --default
influx v1 auth create --org "$org" --username "${INFLUX_COLLECTOR_USER:-edgebench-collector}" \
    --password "${INFLUX_COLLECTOR_PASSWORD:?}" --read-bucket "$bucket_id" --write-bucket "$bucket_id"
influx v1 auth create --org "$org" --username "${INFLUX_GRAFANA_USER:-grafana}" \
    --password "${INFLUX_GRAFANA_PASSWORD:?}" --read-bucket "$bucket_id"
