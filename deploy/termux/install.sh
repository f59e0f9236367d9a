#!/data/data/com.termux/files/usr/bin/bash
# Install the edgebench agent inside Termux on an Android phone and run it as a termux-services service.
#
#   bash install.sh [--source SPEC] [--mqtt URL] [--device-id ID] [--labels k=v,...] [--no-service]
#
# SPEC is what pip installs (default: edgebench from PyPI; a path to a checkout or a wheel works too).
# Needs no root. The phone must stay awake while it benchmarks: the service takes a Termux wake lock.
set -euo pipefail

PREFIX="${PREFIX:-/data/data/com.termux/files/usr}"
HOME="${HOME:-/data/data/com.termux/files/home}"
SOURCE="edgebench"
MQTT=""
DEVICE_ID=""
LABELS="class=android"
SERVICE=1

while [ $# -gt 0 ]; do
  case "$1" in
    --source) SOURCE="$2"; shift 2 ;;
    --mqtt) MQTT="$2"; shift 2 ;;
    --device-id) DEVICE_ID="$2"; shift 2 ;;
    --labels) LABELS="$2"; shift 2 ;;
    --no-service) SERVICE=0; shift ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

if ! command -v pkg >/dev/null 2>&1; then
  echo "install.sh: this script runs inside Termux (pkg not found)" >&2
  exit 1
fi

# numpy comes prebuilt from Termux's repository (building it with pip on a phone takes an hour);
# psutil is compiled by pip, hence clang.
pkg install -y python python-numpy clang make termux-services
pip install --upgrade "$SOURCE"

CONFIG_DIR="$HOME/.config/edgebench"
mkdir -p "$CONFIG_DIR"
if [ ! -f "$CONFIG_DIR/config.toml" ]; then
  {
    echo "# edgebench agent settings (docs/cli.md: flag > EDGEBENCH_AGENT_* environment > this file)"
    echo "[agent]"
    [ -n "$MQTT" ] && echo "mqtt = \"$MQTT\""
    [ -n "$DEVICE_ID" ] && echo "device-id = \"$DEVICE_ID\""
    echo "labels = \"$LABELS\""
    echo "data-dir = \"$HOME/.local/share/edgebench\""
  } > "$CONFIG_DIR/config.toml"
  echo "wrote $CONFIG_DIR/config.toml"
fi

if [ "$SERVICE" = 1 ]; then
  SERVICE_DIR="$PREFIX/var/service/edgebench-agent"
  mkdir -p "$SERVICE_DIR/log"
  install -m 0755 "$(dirname "$0")/service/edgebench-agent/run" "$SERVICE_DIR/run"
  ln -sf "$PREFIX/share/termux-services/svlogger" "$SERVICE_DIR/log/run"
  echo "service installed: start it with 'sv-enable edgebench-agent' (after restarting Termux once so that"
  echo "termux-services' supervisor runs); logs in $PREFIX/var/log/sv/edgebench-agent/"
fi
echo "edgebench installed: try 'edgebench sensors' and 'edgebench bench MODEL'"
