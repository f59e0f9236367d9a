#!/bin/sh
# Make sure the binaries the fleet tests and the local-fleet demo need are installed: Mosquitto and InfluxDB 1.x
# (Debian's influxdb). Idempotent: does nothing when both are present. Starts nothing: tests and the demo start
# their own instances on free loopback ports and stop them by PID.
set -eu

missing=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
command -v influxd >/dev/null 2>&1 || [ -x /usr/bin/influxd ] || missing="$missing influxdb"
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "ensure_services: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086 - word splitting of the package list is intended
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
