#!/bin/sh
# Make sure the binaries the fleet tests and the local-fleet demo need are installed: Mosquitto, InfluxDB 1.x
# (Debian's influxdb), Debian's victoria-metrics (a real /api/v2/write server for the InfluxDB 2.x write path) and
# ccache (compiler cache for the C++ harness), chromium and chromium-driver (the HTML report's browser test). Idempotent: does nothing when all are present. Starts nothing: tests and the demo start
# their own instances on free loopback ports and stop them by PID.
set -eu

missing=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
command -v influxd >/dev/null 2>&1 || [ -x /usr/bin/influxd ] || missing="$missing influxdb"
command -v victoria-metrics >/dev/null 2>&1 || [ -x /usr/bin/victoria-metrics ] || missing="$missing victoria-metrics"
# ccache: the C++ harness's objects cached across checkouts (the Makefile's native target), so a fresh clone does
# not compile it again
command -v ccache >/dev/null 2>&1 || missing="$missing ccache"
# chromium and its chromedriver (one Debian source package, so their versions match): tests/test_html_report.py
# opens `edgebench report --html` pages in a real headless browser, offline
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "ensure_services: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086 - word splitting of the package list is intended
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
