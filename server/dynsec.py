"""The fleet's users, roles and topics for Mosquitto's Dynamic Security plugin: the one definition.

Standard library only, and importing nothing of edgebench: deploy/mosquitto/fleet-auth.py loads this file by its
path on a broker host where edgebench is not installed (deploy/mosquitto/dynsec.py is a link to it), and the
collector's admin routes (server/broker_admin.py) send the same commands over MQTT. Changes are planned as the
plugin's own JSON commands (``$CONTROL/dynamic-security/v1``): the collector sends them, fleet-auth.py prints them as
``mosquitto_ctrl dynsec`` commands and makes the same edit to the plugin's file.
"""

from __future__ import annotations

import re
from typing import Optional

PREFIX = "edgebench/v1/devices"  # docs/protocol.md, "Topic tree"
DEVICE_PUBLISHES = ("status", "inventory", "heartbeat", "telemetry", "events", "model-request")
DEVICE_READS = ("jobs", "cancel", "model-chunk", "acks")
COLLECTOR_SHARED = ("events", "telemetry", "heartbeat", "model-request")  # $share/<group>/...
COLLECTOR_PLAIN = ("status", "inventory")  # retained: a shared subscription never gets retained messages
COLLECTOR_PUBLISHES = ("jobs", "cancel", "model-chunk", "acks")
AGENT_CLIENT_ID = "edgebench-agent-{}"  # agent/fleet/daemon.py
DEFAULT_SHARE_GROUP = "edgebench-collectors"
DEFAULT_COLLECTOR_CLIENT_ID = "edgebench-collector"
ADMIN_ROLE = "dynsec-admin"
CONTROL_TOPIC = "$CONTROL/dynamic-security/#"
COMMAND_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"

# Device ids (the protocol's rule, agent/fleet/protocol.py DEVICE_ID: tests/fleet/test_device_credentials.py checks
# they agree) and the other names here.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
DEFAULT_ACCESS = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False, "unsubscribe": True}


def acl(acltype: str, topic: str) -> dict:
    return {"acltype": acltype, "topic": topic, "allow": True}


def device_acls(device: str) -> list[dict]:
    """Literal topics of its own subtree only: publish what a device publishes, subscribe to and receive what it
    reads. Anything else (another device's topics, wildcards, $share/...) is refused by the default (deny)."""
    acls = [acl("publishClientSend", f"{PREFIX}/{device}/{kind}") for kind in DEVICE_PUBLISHES]
    for kind in DEVICE_READS:
        acls += [acl("subscribeLiteral", f"{PREFIX}/{device}/{kind}"),
                 acl("publishClientReceive", f"{PREFIX}/{device}/{kind}")]
    return acls


def collector_acls(group: str) -> list[dict]:
    """Exactly the subscriptions a collector makes (server/collector.py), the messages those deliver, and what it
    publishes to devices."""
    acls = []
    for kind in COLLECTOR_SHARED:
        acls += [acl("subscribeLiteral", f"$share/{group}/{PREFIX}/+/{kind}"),
                 acl("publishClientReceive", f"{PREFIX}/+/{kind}")]
    for kind in COLLECTOR_PLAIN:
        acls += [acl("subscribeLiteral", f"{PREFIX}/+/{kind}"), acl("publishClientReceive", f"{PREFIX}/+/{kind}")]
    acls += [acl("publishClientSend", f"{PREFIX}/+/{kind}") for kind in COLLECTOR_PUBLISHES]
    return acls


def admin_acls() -> list[dict]:
    """mosquitto_ctrl's requests and the plugin's responses, nothing of the fleet's."""
    return [acl("publishClientSend", CONTROL_TOPIC), acl("publishClientReceive", CONTROL_TOPIC),
            acl("subscribePattern", CONTROL_TOPIC)]


def device_role(device: str) -> str:
    return f"device-{device}"


def collector_role(group: str) -> str:
    return f"collector-{group}"


def role_names(client: dict) -> list[str]:
    return [r.get("rolename", "") for r in client.get("roles") or []]


def kind_of(client: dict) -> str:
    """device, collector, admin or other: what a user of the file (or of getClient's answer) is."""
    roles = role_names(client)
    if device_role(client.get("username", "")) in roles:
        return "device"
    if any(r.startswith("collector-") for r in roles):
        return "collector"
    if ADMIN_ROLE in roles:
        return "admin"
    return "other"


# ---------------------------------------------------------------- changes, as the plugin's JSON commands


def role_commands(name: str, have: Optional[list[dict]], wanted: list[dict]) -> list[dict]:
    """The role with exactly the ``wanted`` ACLs: created when ``have`` is None, else the ACLs that differ (or deny)
    removed and the missing ones added."""
    commands = [] if have is not None else [{"command": "createRole", "rolename": name}]
    keys = {(a["acltype"], a["topic"]) for a in wanted}
    kept = set()
    for old in have or []:
        key = (old.get("acltype", ""), old.get("topic", ""))
        if key in keys and old.get("allow", False):
            kept.add(key)
        else:
            commands.append({"command": "removeRoleACL", "rolename": name, "acltype": key[0], "topic": key[1]})
    commands += [{"command": "addRoleACL", "rolename": name, **new} for new in wanted
                 if (new["acltype"], new["topic"]) not in kept]
    return commands


def client_commands(username: str, client_id: Optional[str], password: str, roles: list[str],
                    existing: Optional[dict]) -> list[dict]:
    """Creates the client, or resets its password, bound client id and roles and enables it (``existing``: the
    client as the file or getClient has it, None when it does not exist)."""
    if existing is None:
        commands = [{"command": "createClient", "username": username, "password": password,
                     **({"clientid": client_id} if client_id else {})}]
        have: list[str] = []
    else:
        commands = [{"command": "setClientPassword", "username": username, "password": password}]
        if (existing.get("clientid") or None) != client_id:
            commands.append({"command": "setClientId", "username": username,
                             **({"clientid": client_id} if client_id else {})})
        have = role_names(existing)
    commands += [{"command": "removeClientRole", "username": username, "rolename": name}
                 for name in have if name not in roles]
    commands += [{"command": "addClientRole", "username": username, "rolename": name}
                 for name in roles if name not in have]
    if existing is not None and existing.get("disabled"):
        commands.append({"command": "enableClient", "username": username})
    return commands


def add_device_commands(device: str, password: str, existing: Optional[dict],
                        role_acls: Optional[list[dict]]) -> list[dict]:
    """What ``fleet-auth.py add-device`` and ``POST /api/v1/devices/{id}/credentials`` do: the device's own role
    (``role_acls``: its ACLs now, None when it does not exist) and its user, bound to edgebench-agent-ID."""
    role = device_role(device)
    return role_commands(role, role_acls, device_acls(device)) + \
        client_commands(device, AGENT_CLIENT_ID.format(device), password, [role], existing)


def remove_device_commands(device: str, role_exists: bool = True) -> list[dict]:
    """The device's user (the plugin disconnects it) and its role."""
    commands = [{"command": "deleteClient", "username": device}]
    return commands + ([{"command": "deleteRole", "rolename": device_role(device)}] if role_exists else [])
