#!/bin/sh
# Create (or reset) the MQTT credentials of one device: its user name is its device id, the ACL (./acl) limits it
# to its own subtree. Prints the password once and the agent's flags.
#   add-device.sh PASSWD_FILE DEVICE_ID [PASSWORD]
set -eu
[ $# -ge 2 ] || { echo "usage: $0 PASSWD_FILE DEVICE_ID [PASSWORD]" >&2; exit 2; }
file=$1 device=$2
printf '%s' "$device" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' || { echo "invalid device id: $device" >&2; exit 2; }
password=${3:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}
[ -f "$file" ] || { touch "$file"; chmod 600 "$file"; }
mosquitto_passwd -b "$file" "$device" "$password"
echo "device $device: password $password"
echo "on the board: echo '$password' > /etc/edgebench/mqtt-password && chmod 600 /etc/edgebench/mqtt-password"
echo "  edgebench agent --device-id $device --username $device --password-file /etc/edgebench/mqtt-password ..."
