"""``hounsfield user …``: add, list, passwd, role, disable, enable, token, tokens, revoke — the accounts of the
HTTP service in the local index (the same database ``serve`` uses: give the same --data-dir / --database-url).

A password is read from standard input with ``--password-stdin`` (scripts: ``printf %s "$PW" | hounsfield user
add …``; its last newline is dropped), else asked for twice without echo. ``user token`` prints the token as
its last line, once: only its digest is kept. Every change is recorded in the audit trail as done by
``cli:<the operating system user>``.

No ``from __future__ import annotations`` here: Typer reads the options from the annotations of signatures
rebuilt by ``with_settings``."""

import getpass
import sys
from datetime import timedelta
from typing import Annotated, Optional

import typer
from rich.table import Table

from hounsfield import config
from hounsfield.auth.roles import ROLES
from hounsfield.cli_common import console, fail, open_pacs, with_settings

app = typer.Typer(help="Users of the web UI, REST and DICOMweb: accounts, roles, passwords, API tokens.",
                  no_args_is_help=True)
ROLE_HELP = "Role: " + ", ".join(f"{name} ({', '.join(sorted(p))})" for name, p in ROLES.items()) + "."
PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input.")]


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="user")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        value = sys.stdin.read()
        return value[:-1] if value.endswith("\n") else value
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        fail("the two passwords differ")
    return first


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _changed(pacs, name: str, what: str) -> None:  # noqa: ANN001 - a Pacs
    pacs.audit.record("user_changed", user=_actor(), detail=f"{name}: {what}")


@app.command("add")
@with_settings
def add(name: Annotated[str, typer.Argument(help="User name (letters, digits, . _ @ -).")],
        role: Annotated[str, typer.Option(help=ROLE_HELP)], settings: config.Settings,
        password_stdin: PasswordStdin = False) -> None:
    """Create a user with a role and a password."""
    password = _password(password_stdin)
    pacs = open_pacs(settings, create=True)
    try:
        pacs.users.add(name, role, password)
        _changed(pacs, name, f"created with role {role}")
    finally:
        pacs.close()
    console.print(f"user {name} added ({role})", highlight=False)


@app.command("list")
@with_settings
def list_(settings: config.Settings) -> None:
    """The users, their roles, whether they are disabled, how many live API tokens they have."""
    pacs = open_pacs(settings)
    try:
        users = pacs.users.all()
    finally:
        pacs.close()
    if not users:
        console.print("no users", highlight=False)
        return
    table = Table("name", "role", "state", "tokens", "created")
    for u in users:
        table.add_row(u["name"], u["role"], "disabled" if u["disabled"] else "enabled", str(u["tokens"]),
                      u["created_at"][:19].replace("T", " "))
    console.print(table)


@app.command("passwd")
@with_settings
def passwd(name: str, settings: config.Settings, password_stdin: PasswordStdin = False) -> None:
    """Set a user's password (ends the user's web sessions)."""
    password = _password(password_stdin)
    pacs = open_pacs(settings)
    try:
        pacs.users.set_password(name, password)
        _changed(pacs, name, "password changed")
    finally:
        pacs.close()
    console.print(f"password of {name} changed", highlight=False)


@app.command("role")
@with_settings
def role(name: str, new_role: Annotated[str, typer.Argument(metavar="ROLE", help=ROLE_HELP)],
         settings: config.Settings) -> None:
    """Give a user another role (ends the user's web sessions)."""
    pacs = open_pacs(settings)
    try:
        pacs.users.set_role(name, new_role)
        _changed(pacs, name, f"role {new_role}")
    finally:
        pacs.close()
    console.print(f"{name} is now {new_role}", highlight=False)


def _set_disabled(name: str, settings: config.Settings, disabled: bool) -> None:
    pacs = open_pacs(settings)
    try:
        pacs.users.set_disabled(name, disabled)
        _changed(pacs, name, "disabled" if disabled else "enabled")
    finally:
        pacs.close()
    console.print(f"{name} {'disabled' if disabled else 'enabled'}", highlight=False)


@app.command("disable")
@with_settings
def disable(name: str, settings: config.Settings) -> None:
    """Refuse a user's logins, sessions, Basic credentials and tokens from now on."""
    _set_disabled(name, settings, True)


@app.command("enable")
@with_settings
def enable(name: str, settings: config.Settings) -> None:
    """Let a disabled user in again."""
    _set_disabled(name, settings, False)


@app.command("token")
@with_settings
def token(name: str, settings: config.Settings,
          label: Annotated[str, typer.Option(help="What the token is for (shown by `user tokens`).")] = "",
          expires_days: Annotated[Optional[int], typer.Option(min=1, help="Days until it expires (none: never).")]
          = None) -> None:
    """Create an API token for a user (Authorization: Bearer); printed once, as the last line."""
    pacs = open_pacs(settings)
    try:
        token_id, value = pacs.users.create_token(name, label=label,
                                                  expires_in=timedelta(days=expires_days) if expires_days else None)
        _changed(pacs, name, f"token {token_id} created")
    finally:
        pacs.close()
    console.print(f"token {token_id} of {name}{' expires in %d days' % expires_days if expires_days else ''} "
                  f"(revoke: hounsfield user revoke {token_id}):", highlight=False)
    print(value)


@app.command("tokens")
@with_settings
def tokens(name: str, settings: config.Settings) -> None:
    """A user's API tokens (never their values)."""
    pacs = open_pacs(settings)
    try:
        rows = pacs.users.tokens(name)
    finally:
        pacs.close()
    table = Table("id", "label", "created", "expires", "last used", "state")
    for t in rows:
        table.add_row(str(t["id"]), t["label"], t["created_at"][:19], (t["expires_at"] or "never")[:19],
                      (t["last_used_at"] or "never")[:19], "revoked" if t["revoked"] else "live")
    console.print(table)


@app.command("revoke")
@with_settings
def revoke(token_id: Annotated[int, typer.Argument(help="The token's id (`user tokens NAME`).")],
           settings: config.Settings) -> None:
    """Revoke an API token: refused from its next use on."""
    pacs = open_pacs(settings)
    try:
        owner = pacs.users.revoke_token(token_id)
        _changed(pacs, owner, f"token {token_id} revoked")
    finally:
        pacs.close()
    console.print(f"token {token_id} of {owner} revoked", highlight=False)
