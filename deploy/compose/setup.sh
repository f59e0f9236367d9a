#!/bin/sh
# Prepare deploy/compose for `docker compose up`: .env with random secrets, a TLS CA, the broker's certificate and
# the collector's (HTTPS API) certificate (both for BROKER_HOSTNAME, the lab server's name, and BROKER_IP if given),
# and the broker's Dynamic Security file
# (secrets/mosquitto/dynamic-security.json: everything denied by default, the admin user for mosquitto_ctrl and the
# collector's device-credentials routes (MQTT_ADMIN_PASSWORD, which docker-compose.yml gives the collector), the
# collector bound to its client id), made with ../mosquitto/fleet-auth.py (needs python3, nothing else).
# Idempotent: what exists is kept (delete a file to make it again); permissions are fixed on every run. Devices:
# ../mosquitto/fleet-auth.py add-device ... (docs/deploy.md, "Adding a board").
#   ./setup.sh BROKER_HOSTNAME [BROKER_IP]
set -eu
[ $# -ge 1 ] || { echo "usage: $0 BROKER_HOSTNAME [BROKER_IP]" >&2; exit 2; }
host=$1 ip=${2:-}
cd "$(dirname "$0")"
umask 077

secret() { head -c 24 /dev/urandom | base64 | tr -d '/+=\n'; }

if [ ! -f .env ]; then
    while IFS= read -r line; do
        case $line in
            EDGEBENCH_PUBLIC_URL=*) echo "EDGEBENCH_PUBLIC_URL=https://$host:8780" ;;
            EDGEBENCH_BROKER_URL=*) echo "EDGEBENCH_BROKER_URL=mqtts://$host:8883" ;;
            *=) echo "$line$(secret)" ;;
            *) echo "$line" ;;
        esac
    done < .env.example > .env
    echo "setup: wrote .env (secrets)"
fi
# A .env from before --broker-device-url: the broker as boards reach it.
grep -q '^EDGEBENCH_BROKER_URL=.' .env || { echo "EDGEBENCH_BROKER_URL=mqtts://$host:8883" >> .env; echo "setup: added EDGEBENCH_BROKER_URL to .env"; }
# A .env from before the Dynamic Security file: add the admin's password.
grep -q '^MQTT_ADMIN_PASSWORD=.' .env || { echo "MQTT_ADMIN_PASSWORD=$(secret)" >> .env; echo "setup: added MQTT_ADMIN_PASSWORD to .env"; }
# A .env from before the collector served HTTPS: its model URLs are https now.
if grep -q '^EDGEBENCH_PUBLIC_URL=http://' .env; then
    sed 's|^EDGEBENCH_PUBLIC_URL=http://|EDGEBENCH_PUBLIC_URL=https://|' .env > .env.new && mv .env.new .env
    echo "setup: EDGEBENCH_PUBLIC_URL in .env is https:// now (the collector serves HTTPS)"
fi

mkdir -p secrets/tls secrets/mosquitto
tls=secrets/tls
if [ ! -f $tls/ca.crt ]; then
    # keyUsage: Python 3.13's clients verify strictly and refuse a CA without it
    openssl req -x509 -new -nodes -newkey rsa:3072 -sha256 -days 3650 -subj "/CN=edgebench lab CA" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout $tls/ca.key -out $tls/ca.crt 2>/dev/null
    echo "setup: made the CA ($tls/ca.crt: give it to every agent, --tls-ca, and to engineers, --server-ca)"
fi
# certificate NAME SUBJECT_ALT_NAMES: $tls/NAME.crt and NAME.key, signed by the CA, for a TLS server
certificate() {
    [ ! -f $tls/$1.crt ] || return 0
    printf '%s\n' "subjectAltName=$2" "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature,keyEncipherment" \
        "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" > $tls/$1.ext
    openssl req -new -nodes -newkey rsa:3072 -sha256 -subj "/CN=$host" -keyout $tls/$1.key -out $tls/$1.csr 2>/dev/null
    openssl x509 -req -sha256 -days 825 -in $tls/$1.csr -CA $tls/ca.crt -CAkey $tls/ca.key -CAcreateserial \
        -extfile $tls/$1.ext -out $tls/$1.crt 2>/dev/null
    rm -f $tls/$1.csr
    echo "setup: made $tls/$1.crt for $2"
}
san="DNS:$host"
[ -n "$ip" ] && san="$san,IP:$ip"
certificate server "$san"
# the collector's HTTPS API: the lab server's name, the compose network's, and loopback for its healthcheck
certificate collector "$san,DNS:collector,DNS:localhost,IP:127.0.0.1"

dynsec=secrets/mosquitto/dynamic-security.json
fleet_auth="python3 ../mosquitto/fleet-auth.py"
env_value() { sed -n "s/^$1=//p" .env; }
if [ "$(id -u)" -ne 0 ] && [ ! -w secrets/mosquitto ]; then
    # Given to the broker's uid by the image's entrypoint at its first start: the broker owns the file now.
    echo "setup: secrets/mosquitto belongs to the broker now: kept as it is (change it with mosquitto_ctrl," \
         "docs/deploy.md, or run setup.sh as root)" >&2
else
    command -v python3 >/dev/null 2>&1 || { echo "setup: python3 is needed (../mosquitto/fleet-auth.py)" >&2; exit 1; }
    if [ ! -f $dynsec ]; then
        $fleet_auth init $dynsec --admin-password "$(env_value MQTT_ADMIN_PASSWORD)" >/dev/null
        echo "setup: made $dynsec with the admin user admin (password: MQTT_ADMIN_PASSWORD in .env)"
    fi
    if ! grep -q '"username":[[:space:]]*"collector"' $dynsec; then
        $fleet_auth add-collector $dynsec collector --client-id edgebench-collector \
            --password "$(env_value MQTT_COLLECTOR_PASSWORD)" >/dev/null
        echo "setup: added the MQTT user collector (client id edgebench-collector)"
    fi
    [ ! -f secrets/mosquitto/passwd ] || echo "setup: secrets/mosquitto/passwd (password_file) is no longer used:" \
        "add the devices to $dynsec (docs/deploy.md), then delete it" >&2
    # The broker runs as uid 1883 in its container: it reads and writes the file and its folder (it saves the
    # changes made with mosquitto_ctrl); nobody else needs to.
    chmod 700 secrets/mosquitto
    chmod 600 $dynsec
    [ "$(id -u)" -ne 0 ] || chown 1883:1883 secrets/mosquitto $dynsec
fi

# The broker must read its key, the collector its own (group 8780: its container's group_add); nobody else needs to.
chmod 644 $tls/ca.crt $tls/server.crt $tls/collector.crt
chmod 600 $tls/ca.key
if [ "$(id -u)" -eq 0 ]; then
    chown 1883:1883 $tls/server.key
    chmod 600 $tls/server.key
    chown 0:8780 $tls/collector.key
    chmod 640 $tls/collector.key
else
    chmod 644 $tls/server.key $tls/collector.key
    echo "setup: not root: $tls/server.key and collector.key are world-readable so the containers can read them;" \
         "as root: chown 1883 server.key, chgrp 8780 collector.key (mode 640) to tighten" >&2
fi
echo "setup: done; next: docker compose up -d --build"
