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
  sync-roles FILE           every device's and collector's role to the topic lists (after an upgrade)

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

The topic lists, roles and the commands that make them are edgebench's server/dynsec.py (dynsec.py here is a link
to it): the collector's `POST /api/v1/devices/{id}/credentials` makes the same device over MQTT.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import secrets
import shlex
import sys
import tempfile

ITERATIONS = 101  # what the plugin itself uses (2.0); the passwords made here are random, 144 bits


def _shared_definitions():
    """server/dynsec.py, the one definition of the fleet's users, roles and topics (the collector's admin routes use
    it too): next to this script (deploy/mosquitto/dynsec.py, a link to it: copying this folder with cp -rL, scp -r
    or rsync -L copies the file), else in the repository this script is part of, else from an installed edgebench."""
    here = os.path.dirname(os.path.realpath(__file__))
    for path in (os.path.join(here, "dynsec.py"), os.path.join(here, "..", "..", "server", "dynsec.py")):
        if os.path.isfile(path):
            spec = importlib.util.spec_from_file_location("edgebench_dynsec", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    try:
        from edgebench.server import dynsec
    except ImportError:
        sys.exit(f"fleet-auth: dynsec.py is missing: copy server/dynsec.py of edgebench next to {__file__}")
    return dynsec


dynsec = _shared_definitions()
NAME, AGENT_CLIENT_ID, ADMIN_ROLE = dynsec.NAME, dynsec.AGENT_CLIENT_ID, dynsec.ADMIN_ROLE
device_role, collector_role, kind_of = dynsec.device_role, dynsec.collector_role, dynsec.kind_of
# mosquitto_ctrl dynsec's arguments for each JSON command, in its order (createClient: below)
CTRL_ARGS = {"setClientPassword": ("username", "password"), "setClientId": ("username", "clientid"),
             "addClientRole": ("username", "rolename"), "removeClientRole": ("username", "rolename"),
             "enableClient": ("username",), "deleteClient": ("username",), "createRole": ("rolename",),
             "deleteRole": ("rolename",), "addRoleACL": ("rolename", "acltype", "topic", "allow"),
             "removeRoleACL": ("rolename", "acltype", "topic")}


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
    return {"clients": [], "groups": [], "roles": [], "defaultACLAccess": dict(dynsec.DEFAULT_ACCESS)}


def hash_password(password: str) -> dict:
    """The plugin's format: base64 of PBKDF2-HMAC-SHA512 (64 bytes) over a random 12-byte salt."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, ITERATIONS, 64)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": ITERATIONS}


def random_password() -> str:
    return secrets.token_urlsafe(18)  # 24 characters of [A-Za-z0-9_-]


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

    def apply(self, commands: list[dict]) -> None:
        """The plugin's JSON commands (server/dynsec.py plans them): made in the file's data, and recorded as
        mosquitto_ctrl commands."""
        for command in commands:
            kind = command["command"]
            if kind == "createClient":
                self.ctrl(kind, command["username"], *(["-c", command["clientid"]] if command.get("clientid") else []),
                          "-p", command["password"])
            else:
                self.ctrl(kind, *(("allow" if command[key] else "deny") if key == "allow" else command[key]
                                  for key in CTRL_ARGS[kind] if key in command))
            edit_file(self.data, command)

    def ensure_role(self, name: str, acls: list[dict]) -> None:
        """The role with exactly these ACLs (missing ones added, others removed)."""
        role = find(self.data["roles"], "rolename", name)
        self.apply(dynsec.role_commands(name, None if role is None else role.get("acls", []), acls))

    def check_client_id(self, username: str, client_id: str) -> None:
        for other in self.data["clients"]:
            if other.get("username") != username and other.get("clientid") == client_id:
                raise Refused(f"client id {client_id!r} already belongs to the user {other.get('username')!r}")

    def ensure_client(self, username: str, client_id: str, password: str, roles: list[str]) -> bool:
        """Creates the client or resets its password, client id and roles; True when it existed."""
        self.check_client_id(username, client_id)
        client = find(self.data["clients"], "username", username)
        self.apply(dynsec.client_commands(username, client_id, password, roles, client))
        return client is not None

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


def edit_file(data: dict, command: dict) -> None:
    """One JSON command made in the file's data. A user or role that is not there (an unreadable file, with
    --print-ctrl) is left alone: only the printed command matters then."""
    kind = command["command"]
    if kind == "createRole":
        data["roles"].append({"rolename": command["rolename"], "acls": []})
    elif kind == "createClient":
        data["clients"].append({"username": command["username"], **hash_password(command["password"]), "roles": [],
                                **({"clientid": command["clientid"]} if command.get("clientid") else {})})
    elif "rolename" in command and "username" not in command:
        role = find(data["roles"], "rolename", command["rolename"])
        if role is None:
            return
        key = (command.get("acltype"), command.get("topic"))
        if kind == "deleteRole":
            data["roles"].remove(role)
        elif kind == "addRoleACL":
            role.setdefault("acls", []).append({k: command[k] for k in ("acltype", "topic", "allow")})
        elif kind == "removeRoleACL":
            role["acls"] = [a for a in role.get("acls", []) if (a.get("acltype"), a.get("topic")) != key]
    else:
        client = find(data["clients"], "username", command["username"])
        if client is None:
            return
        if kind == "deleteClient":
            data["clients"].remove(client)
        elif kind == "setClientPassword":
            client.update(hash_password(command["password"]))
        elif kind == "setClientId":
            client.pop("clientid", None)
            client.update({"clientid": command["clientid"]} if command.get("clientid") else {})
        elif kind == "addClientRole":
            client.setdefault("roles", []).append({"rolename": command["rolename"]})
        elif kind == "removeClientRole":
            client["roles"] = [r for r in client.get("roles", []) if r.get("rolename") != command["rolename"]]
        elif kind == "enableClient":
            client.pop("disabled", None)


# ---------------------------------------------------------------- commands


def cmd_init(args) -> int:
    if os.path.exists(args.file) and not args.force:
        raise Refused(f"{args.file} exists (--force replaces it, and every credential in it)")
    data = new_config()
    lines = []
    if not args.no_admin:
        check_name("admin user name", args.admin_user)
        password = args.admin_password or random_password()
        data["roles"].append({"rolename": ADMIN_ROLE, "acls": dynsec.admin_acls()})
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
        change.check_client_id(device, AGENT_CLIENT_ID.format(device))
        role = find(change.data["roles"], "rolename", device_role(device))
        change.apply(dynsec.add_device_commands(device, password, existing,
                                                None if role is None else role.get("acls", [])))
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
        change.ensure_role(collector_role(group), dynsec.collector_acls(group))
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
                change.ensure_role(device_role(client["username"]), dynsec.device_acls(client["username"]))
        for role in list(change.data["roles"]):
            group = role.get("rolename", "")[len("collector-"):]
            if role.get("rolename", "").startswith("collector-") and NAME.match(group):
                change.ensure_role(role["rolename"], dynsec.collector_acls(group))
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
    p.add_argument("--client-id", default=dynsec.DEFAULT_COLLECTOR_CLIENT_ID,
                   help="its edgebench server --client-id; one per collector (default: %(default)s)")
    p.add_argument("--share-group", default=dynsec.DEFAULT_SHARE_GROUP,
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
