#!/usr/bin/env python3
"""Credentials and ACLs of an edgebench fleet for Mosquitto's Dynamic Security plugin (standard library only).

Makes and edits the plugin's JSON file (``plugin_opt_config_file`` in mosquitto.conf):

  init FILE                 a new file: everything denied by default, an admin user for mosquitto_ctrl
  add-device FILE ID        a device: user name = device id, client id bound to edgebench-agent-ID, its own role
                            (device-ID) with the literal topics of its own subtree; resets the password if it exists
  add-collector FILE USER --client-id ID [--share-group G]
                            a collector: client id bound, the role collector-G (read every device's data through
                            $share/G/..., status and inventory; publish jobs, cancel, model-chunk, acks)
  remove-device FILE ID     remove-collector FILE USER     list FILE
  sync-roles FILE           every device's and collector's role to the topic lists below (after an upgrade)

Why not password_file + acl_file: Mosquitto 2.0's acl_file cannot refuse a subscription (it grants every SUBACK and
filters delivery), so a device subscribed to the collectors' $share group takes its turn of the fleet's messages,
which the broker then drops; and it does not bind client ids to users. Dynamic Security refuses the SUBACK and binds
each user to one client id. It does not substitute %u/%c in ACL topics (2.0), hence one role per device.

The broker rewrites FILE itself while it runs (after every change made through $CONTROL), so edit FILE with this
script only while the broker is stopped; on a running broker apply the same change with mosquitto_ctrl:
--print-ctrl prints the equivalent `mosquitto_ctrl ... dynsec ...` commands as a shell script on stdout (the
password and the agent's flags on stderr) and leaves FILE alone (connection
options: --ctrl-options, or ~/.config/mosquitto_ctrl with -h, -u admin and -P, one a line, and --ctrl-options "").
Passwords given with --password (and -p in the printed commands) appear in the process list and in shell history:
prefer the random default.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import json
import os
import re
import secrets
import shlex
import sys
import tempfile

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

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # device ids (docs/protocol.md), and the other names here
ITERATIONS = 101  # what the plugin itself uses (2.0); the passwords made here are random, 144 bits
DEFAULT_ACCESS = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False, "unsubscribe": True}


class Refused(Exception):
    """A request this script will not carry out (exit status 2)."""


# ---------------------------------------------------------------- the file


def load(path: str, missing_ok: bool = False) -> dict:
    """FILE's data. ``missing_ok`` (--print-ctrl): a file that is missing or unreadable (it belongs to the broker's
    user) counts as empty, so the commands create what they need."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (FileNotFoundError, PermissionError) as exc:
        if missing_ok:
            print(f"fleet-auth: cannot read {path} ({exc.strerror}): printing the commands for new users and roles",
                  file=sys.stderr)
            return dict(new_config(), _unread=True)
        if isinstance(exc, PermissionError):
            raise Refused(f"{path}: {exc.strerror} (the broker's user owns it: use sudo, or --print-ctrl)") from None
        raise Refused(f"{path} does not exist: make it with `init` first") from None
    except ValueError as exc:
        raise Refused(f"{path} is not a Dynamic Security JSON file ({exc}); a password_file is not one: "
                      "see README.md, 'Upgrading from password_file'") from None
    except OSError as exc:
        raise Refused(f"{path}: {exc.strerror}") from None
    if not isinstance(data, dict) or not isinstance(data.get("clients", []), list):
        raise Refused(f"{path}: not a Dynamic Security file")
    for key in ("clients", "roles", "groups"):
        data.setdefault(key, [])
    return data


def save(path: str, data: dict) -> None:
    """Atomically: a temporary file in the same folder, mode 0600, fsynced, renamed over FILE. A file replaced keeps
    its owner and group (the broker's user must read it and, to save its own changes, write it)."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        owner = os.stat(path)
    except FileNotFoundError:
        owner = None
    fd, tmp = tempfile.mkstemp(prefix=".fleet-auth-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            if owner is not None and os.geteuid() == 0:
                os.fchown(handle.fileno(), owner.st_uid, owner.st_gid)
            json.dump(data, handle, indent="\t")
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def new_config() -> dict:
    return {"clients": [], "groups": [], "roles": [], "defaultACLAccess": dict(DEFAULT_ACCESS)}


def hash_password(password: str) -> dict:
    """The plugin's format: base64 of PBKDF2-HMAC-SHA512 (64 bytes) over a random 12-byte salt."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, ITERATIONS, 64)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": ITERATIONS}


def random_password() -> str:
    return secrets.token_urlsafe(18)  # 24 characters of [A-Za-z0-9_-]


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


def find(items: list, key: str, name: str):
    return next((item for item in items if item.get(key) == name), None)


def check_name(what: str, value: str) -> str:
    if not NAME.match(value):
        raise Refused(f"invalid {what} {value!r}: must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}")
    return value


# ---------------------------------------------------------------- changes: to the data, and as mosquitto_ctrl commands


class Change:
    """Edits the file's data and records the mosquitto_ctrl commands that make the same edit on a running broker."""

    def __init__(self, data: dict, ctrl_options: str):
        self.unread = bool(data.pop("_unread", False))  # FILE could not be read: what exists is unknown
        self.data = data
        self.prefix = ["mosquitto_ctrl", *shlex.split(ctrl_options), "dynsec"]
        self.commands: list[str] = []

    def ctrl(self, *args: str) -> None:
        self.commands.append(" ".join(shlex.quote(arg) for arg in (*self.prefix, *args)))

    def ensure_role(self, name: str, acls: list[dict]) -> None:
        """The role with exactly these ACLs (missing ones added, others removed)."""
        role = find(self.data["roles"], "rolename", name)
        if role is None:
            role = {"rolename": name, "acls": []}
            self.data["roles"].append(role)
            self.ctrl("createRole", name)
        wanted = {(a["acltype"], a["topic"]) for a in acls}
        for old in list(role.get("acls", [])):
            if (old.get("acltype"), old.get("topic")) not in wanted or not old.get("allow", False):
                role["acls"].remove(old)
                self.ctrl("removeRoleACL", name, old.get("acltype", ""), old.get("topic", ""))
        have = {(a.get("acltype"), a.get("topic")) for a in role.get("acls", [])}
        for new in acls:
            if (new["acltype"], new["topic"]) not in have:
                role.setdefault("acls", []).append(dict(new))
                self.ctrl("addRoleACL", name, new["acltype"], new["topic"], "allow")

    def ensure_client(self, username: str, client_id: str | None, password: str, roles: list[str]) -> bool:
        """Creates the client or resets its password, client id and roles; True when it existed."""
        for other in self.data["clients"]:
            if client_id and other.get("username") != username and other.get("clientid") == client_id:
                raise Refused(f"client id {client_id!r} already belongs to the user {other.get('username')!r}")
        client = find(self.data["clients"], "username", username)
        existed = client is not None
        if client is None:
            client = {"username": username}
            self.data["clients"].append(client)
            self.ctrl("createClient", username, *(["-c", client_id] if client_id else []), "-p", password)
        else:
            self.ctrl("setClientPassword", username, password)
            if client.get("clientid") != client_id:
                self.ctrl("setClientId", username, *([client_id] if client_id else []))
        client.update(hash_password(password))
        client.pop("clientid", None)
        if client_id:
            client["clientid"] = client_id
        have = [r.get("rolename") for r in client.get("roles", [])]
        for name in have:
            if name not in roles:
                self.ctrl("removeClientRole", username, name)
        for name in roles:
            if name not in have:
                self.ctrl("addClientRole", username, name)
        client["roles"] = [{"rolename": name} for name in roles]
        if client.pop("disabled", False):
            self.ctrl("enableClient", username)
        return existed

    def remove_client(self, username: str) -> dict:
        client = find(self.data["clients"], "username", username)
        if client is None and self.unread:
            self.ctrl("deleteClient", username)
            return {}
        if client is None:
            raise Refused(f"no user {username!r}")
        self.data["clients"].remove(client)
        self.ctrl("deleteClient", username)  # the plugin also disconnects it
        return client

    def remove_role_if_unused(self, name: str) -> None:
        used = any(find(c.get("roles", []), "rolename", name) for c in self.data["clients"]) or \
            any(find(g.get("roles", []), "rolename", name) for g in self.data["groups"])
        role = find(self.data["roles"], "rolename", name)
        if role is None and self.unread:
            self.ctrl("deleteRole", name)
        elif role is not None and not used:
            self.data["roles"].remove(role)
            self.ctrl("deleteRole", name)


def kind_of(client: dict) -> str:
    roles = [r.get("rolename", "") for r in client.get("roles", [])]
    if device_role(client.get("username", "")) in roles:
        return "device"
    if any(r.startswith("collector-") for r in roles):
        return "collector"
    if ADMIN_ROLE in roles:
        return "admin"
    return "other"


# ---------------------------------------------------------------- commands


def cmd_init(args) -> int:
    if os.path.exists(args.file) and not args.force:
        raise Refused(f"{args.file} exists (--force replaces it, and every credential in it)")
    data = new_config()
    lines = []
    if not args.no_admin:
        check_name("admin user name", args.admin_user)
        password = args.admin_password or random_password()
        data["roles"].append({"rolename": ADMIN_ROLE, "acls": admin_acls()})
        data["clients"].append({"username": args.admin_user, **hash_password(password),
                                "roles": [{"rolename": ADMIN_ROLE}]})
        lines = [f"admin {args.admin_user}: password {password}",
                 f"  live changes: mosquitto_ctrl -u {args.admin_user} dynsec ... (it asks for this password)"]
    save(args.file, data)
    print(f"wrote {args.file}: everything denied by default; add the collector (add-collector) and devices "
          "(add-device)")
    print("\n".join(lines))
    return 0


def _edit(args, apply) -> int:
    """Runs ``apply(change)``, then saves FILE, or (--print-ctrl) prints the mosquitto_ctrl commands instead: a shell
    script on stdout (pipe it to sh), the rest (the password, the agent's flags) on stderr."""
    data = load(args.file, missing_ok=args.print_ctrl)
    change = Change(copy.deepcopy(data) if args.print_ctrl else data, args.ctrl_options)
    message = apply(change)
    if args.print_ctrl:
        print("# apply to the running broker (which then saves its file itself):")
        print("\n".join(change.commands) if change.commands else "# nothing to change")
    else:
        save(args.file, change.data)
        print(f"updated {args.file} (a running broker does not see this: stop it first, or use --print-ctrl)",
              file=sys.stderr)
    if message:
        print(message, file=sys.stderr if args.print_ctrl else sys.stdout)
    return 0


def cmd_add_device(args) -> int:
    device = check_name("device id", args.device_id)

    def apply(change: Change) -> str:
        existing = find(change.data["clients"], "username", device)
        if existing is not None and kind_of(existing) != "device":
            raise Refused(f"the user name {device!r} is taken by a {kind_of(existing)} user")
        password = args.password or random_password()
        change.ensure_role(device_role(device), device_acls(device))
        change.ensure_client(device, AGENT_CLIENT_ID.format(device), password, [device_role(device)])
        return "\n".join([
            f"device {device}: password {password}",
            f"on the board: echo {shlex.quote(password)} > /etc/edgebench/mqtt-password"
            " && chmod 600 /etc/edgebench/mqtt-password",
            f"  edgebench agent --device-id {device} --username {device} "
            "--password-file /etc/edgebench/mqtt-password ..."])

    return _edit(args, apply)


def cmd_add_collector(args) -> int:
    user = check_name("user name", args.username)
    client_id = check_name("client id", args.client_id)
    group = check_name("share group", args.share_group)
    if client_id.startswith(AGENT_CLIENT_ID.format("")):
        raise Refused(f"client id {client_id!r} is an agent's (edgebench-agent-...)")

    def apply(change: Change) -> str:
        existing = find(change.data["clients"], "username", user)
        if existing is not None and kind_of(existing) != "collector":
            raise Refused(f"the user name {user!r} is taken by a {kind_of(existing)} user")
        password = args.password or random_password()
        change.ensure_role(collector_role(group), collector_acls(group))
        old_roles = [r.get("rolename", "") for r in (existing or {}).get("roles", [])]
        change.ensure_client(user, client_id, password, [collector_role(group)])
        for name in old_roles:  # moved to another share group
            if name != collector_role(group):
                change.remove_role_if_unused(name)
        return "\n".join([
            f"collector {user}: password {password}",
            f"  edgebench server --username {user} --password-file FILE --client-id {client_id} "
            f"--share-group {group} ...  (or the password in $EDGEBENCH_MQTT_PASSWORD)"])

    return _edit(args, apply)


def cmd_remove_device(args) -> int:
    device = check_name("device id", args.device_id)

    def apply(change: Change) -> str:
        existing = find(change.data["clients"], "username", device)
        if existing is not None and kind_of(existing) != "device":
            raise Refused(f"{device!r} is a {kind_of(existing)} user, not a device")
        change.remove_client(device)
        change.remove_role_if_unused(device_role(device))
        return f"device {device} removed"

    return _edit(args, apply)


def cmd_remove_collector(args) -> int:
    def apply(change: Change) -> str:
        existing = find(change.data["clients"], "username", args.username)
        if existing is not None and kind_of(existing) != "collector":
            raise Refused(f"{args.username!r} is a {kind_of(existing)} user, not a collector")
        client = change.remove_client(args.username)
        for role in client.get("roles", []):
            change.remove_role_if_unused(role.get("rolename", ""))
        return f"collector {args.username} removed"

    return _edit(args, apply)


def cmd_sync_roles(args) -> int:
    """Every device's and collector group's role to this script's topic lists (after a protocol change)."""

    def apply(change: Change) -> str:
        for client in list(change.data["clients"]):
            if kind_of(client) == "device":
                change.ensure_role(device_role(client["username"]), device_acls(client["username"]))
        for role in list(change.data["roles"]):
            group = role.get("rolename", "")[len("collector-"):]
            if role.get("rolename", "").startswith("collector-") and NAME.match(group):
                change.ensure_role(role["rolename"], collector_acls(group))
        return f"{len(change.commands)} change(s)"

    return _edit(args, apply)


def cmd_list(args) -> int:
    data = load(args.file)
    rows = [(kind_of(c), c.get("username", ""), c.get("clientid", "(any)"),
             ",".join(r.get("rolename", "") for r in c.get("roles", [])) + (" DISABLED" if c.get("disabled") else ""))
            for c in data["clients"]]
    rows.sort()
    header = ("kind", "user", "client id", "roles")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  ".join(str(value).ljust(width) for value, width in zip(row, widths)) + "  " + row[3])
    denied = [k for k, v in data.get("defaultACLAccess", {}).items() if not v]
    print(f"{len(data['roles'])} roles; denied by default: {', '.join(denied) or 'nothing'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleet-auth.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def editing(p: argparse.ArgumentParser) -> None:
        p.description = (f"{p.description} Edits FILE: stop the broker first (it rewrites FILE itself while it runs), "
                         "or apply the change live with the commands --print-ctrl prints.")
        p.add_argument("--print-ctrl", action="store_true",
                       help="do not write FILE (the running broker owns it): print the mosquitto_ctrl commands that "
                            "make this change live")
        p.add_argument("--ctrl-options", default="-u admin", metavar="OPTIONS",
                       help="mosquitto_ctrl's connection options in the printed commands (default: %(default)s)")

    p = sub.add_parser("init", help="a new file: default deny, an admin user for mosquitto_ctrl")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--admin-user", default="admin")
    p.add_argument("--admin-password", help="default: random, printed once")
    p.add_argument("--no-admin", action="store_true", help="no admin user (no live changes with mosquitto_ctrl)")
    p.add_argument("--force", action="store_true", help="replace an existing FILE")
    p.set_defaults(run=cmd_init)

    p = sub.add_parser("add-device", help="add a device, or reset its password",
                       description="Add a device (user name = device id, client id edgebench-agent-ID, role "
                                   "device-ID: its own topics only), or reset its password.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("device_id", metavar="DEVICE_ID")
    p.add_argument("--password", help="default: random, printed once")
    editing(p)
    p.set_defaults(run=cmd_add_device)

    p = sub.add_parser("add-collector", help="add a collector, or reset its password",
                       description="Add a collector (its client id bound, role collector-GROUP), or reset its "
                                   "password.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("username", metavar="USERNAME")
    p.add_argument("--client-id", default=DEFAULT_COLLECTOR_CLIENT_ID,
                   help="its edgebench server --client-id; one per collector (default: %(default)s)")
    p.add_argument("--share-group", default=DEFAULT_SHARE_GROUP,
                   help="its edgebench server --share-group (default: %(default)s)")
    p.add_argument("--password", help="default: random, printed once")
    editing(p)
    p.set_defaults(run=cmd_add_collector)

    p = sub.add_parser("remove-device", help="remove a device and its role",
                       description="Remove a device and its role (live: the broker also disconnects it).")
    p.add_argument("file", metavar="FILE")
    p.add_argument("device_id", metavar="DEVICE_ID")
    editing(p)
    p.set_defaults(run=cmd_remove_device)

    p = sub.add_parser("remove-collector", help="remove a collector (and its role once no collector uses it)",
                       description="Remove a collector, and its role once no collector uses it.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("username", metavar="USERNAME")
    editing(p)
    p.set_defaults(run=cmd_remove_collector)

    p = sub.add_parser("sync-roles", help="bring every device and collector role to the current topic lists",
                       description="Bring every device and collector role to this script's topic lists (after an "
                                   "upgrade that adds a kind of message); passwords are kept.")
    p.add_argument("file", metavar="FILE")
    editing(p)
    p.set_defaults(run=cmd_sync_roles)

    p = sub.add_parser("list", help="users, their bound client ids and roles")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(run=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except Refused as exc:
        print(f"fleet-auth: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
