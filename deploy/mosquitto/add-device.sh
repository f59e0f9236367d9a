#!/bin/sh
# Create (or reset) the MQTT credentials of one device in the Dynamic Security file: its user name is its device id,
# its client id edgebench-agent-<id>, its role device-<id> (its own topics only). A thin wrapper around
# fleet-auth.py (next to this script; python3 only, no edgebench needed): prints the password once and the agent's
# flags. Edit FILE with the broker stopped, or apply the change live: fleet-auth.py add-device ... --print-ctrl.
#   add-device.sh DYNSEC_FILE DEVICE_ID [PASSWORD]
set -eu
[ $# -ge 2 ] || { echo "usage: $0 DYNSEC_FILE DEVICE_ID [PASSWORD]" >&2; exit 2; }
here=$(dirname "$0")
if [ $# -ge 3 ]; then
    exec python3 "$here/fleet-auth.py" add-device "$1" "$2" --password "$3"
fi
exec python3 "$here/fleet-auth.py" add-device "$1" "$2"
