#!/bin/sh
# Prepare deploy/compose for `docker compose up`: .env with random secrets, a TLS CA and the broker's certificate
# (for BROKER_HOSTNAME, and BROKER_IP if given), and the broker's Dynamic Security file
# (secrets/mosquitto/dynamic-security.json: everything denied by default, the admin user for mosquitto_ctrl, the
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
            EDGEBENCH_PUBLIC_URL=*) echo "EDGEBENCH_PUBLIC_URL=http://$host:8780" ;;
            *=) echo "$line$(secret)" ;;
            *) echo "$line" ;;
        esac
    done < .env.example > .env
    echo "setup: wrote .env (secrets)"
fi
# A .env from before the Dynamic Security file: add the admin's password.
grep -q '^MQTT_ADMIN_PASSWORD=.' .env || { echo "MQTT_ADMIN_PASSWORD=$(secret)" >> .env; echo "setup: added MQTT_ADMIN_PASSWORD to .env"; }

mkdir -p secrets/tls secrets/mosquitto
tls=secrets/tls
if [ ! -f $tls/ca.crt ]; then
    openssl req -x509 -new -nodes -newkey rsa:3072 -sha256 -days 3650 -subj "/CN=edgebench lab CA" \
        -keyout $tls/ca.key -out $tls/ca.crt 2>/dev/null
    echo "setup: made the CA ($tls/ca.crt: give it to every agent, --tls-ca)"
fi
if [ ! -f $tls/server.crt ]; then
    san="DNS:$host"
    [ -n "$ip" ] && san="$san,IP:$ip"
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" > $tls/server.ext
    openssl req -new -nodes -newkey rsa:3072 -sha256 -subj "/CN=$host" -keyout $tls/server.key \
        -out $tls/server.csr 2>/dev/null
    openssl x509 -req -sha256 -days 825 -in $tls/server.csr -CA $tls/ca.crt -CAkey $tls/ca.key -CAcreateserial \
        -extfile $tls/server.ext -out $tls/server.crt 2>/dev/null
    rm -f $tls/server.csr
    echo "setup: made the broker certificate for $san"
fi

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

# The broker must read its key; nobody else needs to.
chmod 644 $tls/ca.crt $tls/server.crt
chmod 600 $tls/ca.key
if [ "$(id -u)" -eq 0 ]; then
    chown 1883:1883 $tls/server.key
    chmod 600 $tls/server.key
else
    chmod 644 $tls/server.key
    echo "setup: not root: $tls/server.key is world-readable so the broker's uid can read it; chown it to 1883" \
         "as root to tighten" >&2
fi
echo "setup: done; next: docker compose up -d --build"
