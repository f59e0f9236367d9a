"""MQTT connection settings shared by the agent daemon and the collector: URL, credentials, TLS, session.

paho-mqtt is imported only inside ``make_client`` (the command modules must stay stdlib-only at import time).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import unquote, urlsplit

from edgebench.agent.errors import UsageError

DEFAULT_SESSION_EXPIRY_S = 7 * 86400  # queued QoS 1 messages wait this long for a device that is away


@dataclass
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    username: Optional[str] = None
    password: Optional[str] = None
    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S
    keepalive_s: int = 30


def parse_url(url: str) -> MqttSettings:
    """``mqtt://user:pass@host:1883`` or ``mqtts://host:8883`` -> settings."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise UsageError(f"--mqtt {url!r}: expected mqtt://host:port or mqtts://host:port")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise UsageError(f"--mqtt {url!r}: invalid port") from None
    return MqttSettings(host=parts.hostname or "127.0.0.1", port=port, tls=tls,
                        username=unquote(parts.username) if parts.username else None,
                        password=unquote(parts.password) if parts.password else None)


def configure(url: str, username: Optional[str] = None, password_file: Optional[str] = None,
              ca_file: Optional[str] = None, cert_file: Optional[str] = None, key_file: Optional[str] = None,
              session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S) -> MqttSettings:
    """Settings from the broker URL and the credentials beside it; the password comes from ``password_file``,
    else ``$EDGEBENCH_MQTT_PASSWORD`` (never a flag: a flag is visible in the process list)."""
    settings = parse_url(url)
    settings.username = username or settings.username
    if password_file:
        settings.password = read_password(password_file, "--password-file")
    elif os.environ.get("EDGEBENCH_MQTT_PASSWORD"):
        settings.password = os.environ["EDGEBENCH_MQTT_PASSWORD"]
    settings.ca_file, settings.cert_file, settings.key_file = ca_file, cert_file, key_file
    settings.tls = settings.tls or bool(ca_file)
    settings.session_expiry_s = session_expiry_s
    return settings


def read_password(path: str, flag: str) -> str:
    """A password file's content, stripped; ``flag`` names it in the one-line error."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror}") from None


def make_client(settings: MqttSettings, client_id: str, manual_ack: bool = False) -> Any:
    """A paho MQTT v5 client for a persistent session (connect with ``connect_properties``)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file, keyfile=settings.key_file)
    client.reconnect_delay_set(min_delay=1, max_delay=30)  # paho's own exponential backoff between attempts
    client.max_queued_messages_set(0)  # unbounded in paho: the callers bound what they hand it
    return client


def connect_properties(settings: MqttSettings, receive_maximum: Optional[int] = None) -> Any:
    """CONNECT properties of a persistent v5 session: without SessionExpiryInterval, clean_start=False alone
    still loses the session (and the queued QoS 1 messages) at the first disconnect."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = settings.session_expiry_s
    if receive_maximum:
        props.ReceiveMaximum = receive_maximum
    return props


def connect(client: Any, settings: MqttSettings, receive_maximum: Optional[int] = None) -> None:
    """Start connecting in the background (paho's loop thread retries with backoff until it succeeds)."""
    client.connect_async(settings.host, settings.port, keepalive=settings.keepalive_s, clean_start=False,
                         properties=connect_properties(settings, receive_maximum))
    client.loop_start()
