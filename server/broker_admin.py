"""Devices' MQTT credentials through the broker's Dynamic Security plugin, for the API's admin routes.

The collector holds a broker admin account (``edgebench server --broker-admin-user``) and, per request, opens a
short-lived MQTT connection with it (the collector's broker URL and TLS settings, a clean session), sends the
plugin's JSON commands to ``$CONTROL/dynamic-security/v1`` and reads the answers on ``.../v1/response``, matched by
correlation data (every admin connected receives every answer). What is made is planned by server/dynsec.py, the
definition deploy/mosquitto/fleet-auth.py uses too. Passwords are random, returned once and never stored here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import threading
from typing import Any, Optional

from edgebench.agent.fleet.mqtt import MqttSettings, make_client
from edgebench.server import dynsec

log = logging.getLogger(__name__)
ANSWER_TIMEOUT_S = 15.0  # connect, subscribe, and the plugin's answer (it saves its file before answering)
NOT_FOUND = ("Client not found", "Role not found")


class BrokerError(Exception):
    """The broker cannot be reached, refused the admin, or the plugin answered an error: ``status`` for the API."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class BrokerAdmin:
    """Runs the plugin's commands with the broker admin account, one request at a time (a device's read-then-change
    is not interleaved with another's)."""

    def __init__(self, settings: MqttSettings, client_id: str, timeout_s: float = ANSWER_TIMEOUT_S):
        self.settings, self.client_id, self.timeout_s = settings, client_id, timeout_s
        self._lock = threading.RLock()

    @classmethod
    def for_collector(cls, mqtt: MqttSettings, user: str, password: str, collector_client_id: str) -> BrokerAdmin:
        """The collector's broker and TLS settings with the admin's credentials."""
        return cls(dataclasses.replace(mqtt, username=user, password=password), f"{collector_client_id}-admin")

    def run(self, commands: list[dict]) -> list[dict]:
        """The plugin's answer to each command, in order (an answer with ``error`` is the plugin's refusal)."""
        if not commands:
            return []
        with self._lock:
            return _Exchange(self.settings, f"{self.client_id}-{secrets.token_hex(4)}", commands).run(self.timeout_s)

    # ------------------------------------------------------------ a device's credentials

    def issue(self, device: str) -> dict:
        """Creates the device's user and role, or resets its password (the same as fleet-auth.py add-device)."""
        password = secrets.token_urlsafe(18)  # 144 random bits, as fleet-auth.py's
        with self._lock:
            client, role = self._lookup(device)
            if client is not None and dynsec.kind_of(client) != "device":
                raise BrokerError(409, f"the broker user {device!r} is a {dynsec.kind_of(client)} user, not a device")
            acls = None if role is None else role.get("acls") or []
            _check(self.run(dynsec.add_device_commands(device, password, client, acls)))
        log.info("broker credentials %s for device %s", "reset" if client else "created", device)
        return {"device": device, "username": device, "password": password,
                "client_id": dynsec.AGENT_CLIENT_ID.format(device), "reset": client is not None}

    def revoke(self, device: str) -> dict:
        """Deletes the device's user (the broker disconnects it) and its role."""
        with self._lock:
            client, role = self._lookup(device)
            if client is None:
                raise BrokerError(404, f"the broker has no user {device!r}")
            if dynsec.kind_of(client) != "device":
                raise BrokerError(409, f"the broker user {device!r} is a {dynsec.kind_of(client)} user, not a device")
            _check(self.run(dynsec.remove_device_commands(device, role_exists=role is not None)))
        log.info("broker credentials revoked for device %s", device)
        return {"device": device, "revoked": True}

    def _lookup(self, device: str) -> tuple[Optional[dict], Optional[dict]]:
        """The device's user and role as the plugin has them (None: missing)."""
        client, role = self.run([{"command": "getClient", "username": device},
                                 {"command": "getRole", "rolename": dynsec.device_role(device)}])
        _check([answer for answer in (client, role) if answer.get("error") not in NOT_FOUND])
        return (None if client.get("error") else (client.get("data") or {}).get("client") or {},
                None if role.get("error") else (role.get("data") or {}).get("role") or {})


def _check(answers: list[dict]) -> None:
    errors = [f"{a.get('command')}: {a['error']}" for a in answers if a.get("error")]
    if errors:
        raise BrokerError(502, "the broker refused: " + "; ".join(errors))


class _Exchange:
    """One connection: CONNECT, SUBSCRIBE to the answers, PUBLISH the commands, wait for every answer."""

    def __init__(self, settings: MqttSettings, client_id: str, commands: list[dict]):
        self.settings, self.client_id = settings, client_id
        tag = secrets.token_hex(8)
        self.commands = [dict(command, correlationData=f"{tag}-{n}") for n, command in enumerate(commands)]
        self.answers: dict[str, dict] = {}
        self.error: Optional[str] = None
        self.done = threading.Event()

    def run(self, timeout_s: float) -> list[dict]:
        client = make_client(self.settings, self.client_id)
        client.on_connect, client.on_subscribe = self._on_connect, self._on_subscribe
        client.on_publish, client.on_message, client.on_disconnect = self._on_publish, self._on_message, \
            self._on_disconnect
        where = f"{self.settings.host}:{self.settings.port}"
        try:
            client.connect(self.settings.host, self.settings.port, keepalive=30, clean_start=True)
        except (OSError, ValueError) as exc:  # refused, unreachable, TLS (ssl.SSLError is an OSError)
            raise BrokerError(502, f"cannot reach the broker at {where}: {exc}") from None
        client.loop_start()
        try:
            if not self.done.wait(timeout_s):
                raise BrokerError(502, f"the broker at {where} did not answer the admin's commands in {timeout_s:g}s")
        finally:
            client.disconnect()
            client.loop_stop()
        if self.error:
            raise BrokerError(502, f"broker {where}: {self.error}")
        return [self.answers[command["correlationData"]] for command in self.commands]

    def _fail(self, error: str) -> None:
        self.error = self.error or error
        self.done.set()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._fail(f"the admin account was refused: {reason}")
        else:
            client.subscribe(dynsec.RESPONSE_TOPIC, qos=1)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: list, properties: Any) -> None:
        if reasons[0].is_failure:
            self._fail(f"subscribing to {dynsec.RESPONSE_TOPIC} was refused: {reasons[0]} (is the user an admin?)")
        else:
            client.publish(dynsec.COMMAND_TOPIC, json.dumps({"commands": self.commands}), qos=1)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._fail(f"the commands were refused: {reason} (is the user an admin?)")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            answers = json.loads(message.payload).get("responses") or []
        except (ValueError, AttributeError):
            return  # not the plugin's
        for answer in answers:
            if isinstance(answer, dict) and answer.get("correlationData") in {c["correlationData"]
                                                                               for c in self.commands}:
                self.answers[answer["correlationData"]] = answer
        if len(self.answers) == len(self.commands):
            self.done.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if not self.done.is_set():
            self._fail(f"disconnected: {reason}")
