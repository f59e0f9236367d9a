#!/bin/sh
# Prepare deploy/compose for `docker compose up`: .env with random secrets, a TLS CA and the broker's certificate
# (for BROKER_HOSTNAME, and BROKER_IP if given), and the Mosquitto password file with the collector's user.
# Idempotent: what exists is kept (delete a file to make it again); permissions are fixed on every run, so run it
# again after adding devices with ../mosquitto/add-device.sh secrets/mosquitto/passwd DEVICE_ID.
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

passwd=secrets/mosquitto/passwd
if [ ! -f $passwd ] || ! grep -q '^collector:' $passwd; then
    password=$(sed -n 's/^MQTT_COLLECTOR_PASSWORD=//p' .env)
    touch $passwd
    if command -v mosquitto_passwd >/dev/null 2>&1; then
        mosquitto_passwd -b $passwd collector "$password"
    else
        docker run --rm -v "$PWD/secrets/mosquitto:/m" eclipse-mosquitto:2.0.20 \
            mosquitto_passwd -b /m/passwd collector "$password"
    fi
    echo "setup: added the MQTT user collector"
fi

# The broker runs as uid 1883 in its container: it must read its key and the password file; nobody else needs to.
chmod 644 $tls/ca.crt $tls/server.crt
chmod 600 $tls/ca.key
if [ "$(id -u)" -eq 0 ]; then
    chown 1883:1883 $tls/server.key $passwd
    chmod 600 $tls/server.key $passwd
else
    chmod 644 $tls/server.key $passwd
    echo "setup: not root: $tls/server.key and $passwd are world-readable so the broker's uid can read them;" \
         "chown them to 1883 as root to tighten" >&2
fi
echo "setup: done; next: docker compose up -d --build"
