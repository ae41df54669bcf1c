"""The accounts over REST, for admins (issue 12; the permission table gives every route here ``admin`` by
default): what ``hounsfield user …`` does on the CLI. Every change is recorded in the audit trail with the
admin who made it. Passwords and tokens never come back out, except a new token, once."""

from __future__ import annotations

from datetime import timedelta
from typing import Optional

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from hounsfield.web.auth import client_address, principal_of
from hounsfield.web.worklist_api import Timestamp

router = APIRouter(prefix="/api", tags=["users"])


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    role: str = Field(min_length=1, max_length=32)
    password: str = Field(min_length=1, max_length=1024)


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Optional[str] = Field(default=None, max_length=32)
    disabled: Optional[bool] = None
    password: Optional[str] = Field(default=None, min_length=1, max_length=1024)


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(default="", max_length=64)
    expires_days: Optional[int] = Field(default=None, ge=1, le=3650)


class UserOut(BaseModel):
    name: str
    role: str
    disabled: bool
    created_at: Timestamp
    tokens: int = Field(description="API tokens not revoked")


class TokenOut(BaseModel):
    id: int
    label: str
    created_at: Timestamp
    expires_at: Optional[Timestamp] = Field(description="null: never")
    revoked: bool
    last_used_at: Optional[Timestamp] = Field(description="null: never used")


class CreatedToken(BaseModel):
    id: int
    token: str = Field(description="the token's value: shown this once, never again")


class RevokedToken(BaseModel):
    id: int
    user: str
    revoked: bool


def _changed(request: Request, name: str, what: str) -> None:
    principal = principal_of(request.scope)
    request.app.state.pacs.audit.record("user_changed", user=principal.name if principal else "",
                                        address=client_address(request.scope), detail=f"{name}: {what}")


@router.get("/users", summary="The users, their roles and states")
def list_users(request: Request) -> list[UserOut]:
    return [UserOut(**u) for u in request.app.state.pacs.users.all()]


@router.post("/users", status_code=201, summary="Create a user")
def add_user(request: Request, body: NewUser) -> UserOut:
    created = request.app.state.pacs.users.add(body.name, body.role, body.password)
    _changed(request, body.name, f"created with role {body.role}")
    return UserOut(**created)


@router.patch("/users/{name}", summary="Change a user's role, state or password (ends the user's sessions)")
def change_user(request: Request, name: str, body: UserChange) -> UserOut:
    users = request.app.state.pacs.users
    if body.password is not None:
        users.set_password(name, body.password)
        _changed(request, name, "password changed")
    if body.role is not None:
        users.set_role(name, body.role)
        _changed(request, name, f"role {body.role}")
    if body.disabled is not None:
        users.set_disabled(name, body.disabled)
        _changed(request, name, "disabled" if body.disabled else "enabled")
    return UserOut(**users.get(name))


@router.get("/users/{name}/tokens", summary="A user's API tokens (never their values)")
def list_tokens(request: Request, name: str) -> list[TokenOut]:
    return [TokenOut(**t) for t in request.app.state.pacs.users.tokens(name)]


@router.post("/users/{name}/tokens", status_code=201, summary="Create an API token (its value is shown once)")
def add_token(request: Request, name: str, body: NewToken) -> CreatedToken:
    token_id, token = request.app.state.pacs.users.create_token(
        name, label=body.label, expires_in=timedelta(days=body.expires_days) if body.expires_days else None)
    _changed(request, name, f"token {token_id} created")
    return CreatedToken(id=token_id, token=token)


@router.delete("/tokens/{token_id}", summary="Revoke an API token")
def revoke_token(request: Request, token_id: int) -> RevokedToken:
    owner = request.app.state.pacs.users.revoke_token(token_id)
    _changed(request, owner, f"token {token_id} revoked")
    return RevokedToken(id=token_id, user=owner, revoked=True)
