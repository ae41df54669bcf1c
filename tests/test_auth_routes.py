"""Every HTTP route behind the login check (issue 12): the app's routes are enumerated, and each one refuses an
anonymous request and a request of every role without the permission it needs, and lets the roles that have
it through. The expectations are this file's own table, written from the issue's role descriptions, not the
server's (``web.auth.ROUTE_PERMISSIONS``); a route missing from it fails the test, so a new route cannot go
unreviewed."""

from __future__ import annotations

import re
from typing import Iterator

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Mount

from hounsfield import config
from hounsfield.pacs import Pacs
from hounsfield.web.app import create_app

# What each role may do, from the issue: admin everything; physician / physicist read every study and export;
# technologist store, send, worklist, MPPS view; scheduler worklist only; viewer read only.
ROLE_ABILITIES = {
    "admin": {"read", "export", "store", "send", "delete", "worklist", "worklist_edit", "admin"},
    "physician": {"read", "export", "worklist"},
    "physicist": {"read", "export", "worklist"},
    "technologist": {"read", "store", "send", "worklist", "worklist_edit"},
    "scheduler": {"worklist", "worklist_edit"},
    "viewer": {"read"},
}
ANYONE, ANY_USER = "anyone", "any user"
DICOMWEB_READ = [
    "/studies", "/series", "/instances", "/studies/{study}/series", "/studies/{study}/instances",
    "/studies/{study}/series/{series}/instances", "/studies/{study}", "/studies/{study}/series/{series}",
    "/studies/{study}/series/{series}/instances/{sop}", "/studies/{study}/metadata",
    "/studies/{study}/series/{series}/metadata", "/studies/{study}/series/{series}/instances/{sop}/metadata",
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
    "/studies/{study}/series/{series}/instances/{sop}/bulk/{tag}",
    "/studies/{study}/series/{series}/instances/{sop}/rendered",
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered", "/studies/{study}/thumbnail",
    "/studies/{study}/series/{series}/thumbnail", "/studies/{study}/series/{series}/instances/{sop}/thumbnail",
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/thumbnail",
]
EXPECTED: dict[tuple[str, str], str] = {
    ("GET", "/health"): ANYONE,
    ("GET", "/login"): ANYONE, ("POST", "/login"): ANYONE, ("POST", "/logout"): ANYONE,
    ("GET", "/docs/swagger-init.js"): ANYONE, ("GET", "/worklist/static/{name}"): ANYONE,
    ("GET", "/"): ANY_USER, ("GET", "/docs"): ANY_USER, ("GET", "/redoc"): ANY_USER,
    ("GET", "/openapi.json"): ANY_USER, ("GET", "/api/me"): ANY_USER, ("GET", "/worklist"): ANY_USER,
    **{("GET", f"/api/{level}"): "read" for level in ("patients", "studies", "series", "instances")},
    **{("GET", f"/api/{level}/{{uid}}"): "read" for level in ("patients", "studies", "series", "instances")},
    **{("DELETE", f"/api/{level}/{{uid}}"): "delete" for level in ("patients", "studies", "series", "instances")},
    ("GET", "/api/instances/{uid}/file"): "export",
    ("GET", "/api/peers"): "admin", ("PUT", "/api/peers/{name}"): "admin", ("DELETE", "/api/peers/{name}"): "admin",
    ("GET", "/api/quarantine"): "admin", ("POST", "/api/quarantine/{name}/retry"): "admin",
    ("DELETE", "/api/quarantine/{name}"): "admin",
    ("POST", "/api/studies/{uid}/send"): "send",
    # issue 14: a job (send or retrieve) names a study and a node: whoever may see studies may follow it;
    # searching a remote node is reading, its worklist the worklist, retrieving from it bringing data in
    ("GET", "/api/jobs/{job_id}"): "read", ("GET", "/api/jobs"): "read", ("GET", "/api/remote/peers"): "read",
    ("POST", "/api/peers/{name}/echo"): "read", ("POST", "/api/peers/{name}/find"): "read",
    ("POST", "/api/peers/{name}/find-worklist"): "worklist", ("POST", "/api/peers/{name}/retrieve"): "store",
    ("POST", "/api/upload"): "store",
    **{("GET", f"/dicom-web{path}"): "read" for path in DICOMWEB_READ},
    ("POST", "/dicom-web/studies"): "store", ("POST", "/dicom-web/studies/{study}"): "store",
    ("GET", "/ui/api/presets"): "read", ("GET", "/ui/api/values/{study}/{series}/{sop}"): "read",
    ("GET", "/ui/api/tags/{study}/{series}/{sop}"): "read",
    ("GET", "/ui/api/peers"): "send", ("POST", "/ui/api/peers/{name}/echo"): "send",
    ("GET", "/api/worklist/items"): "worklist", ("GET", "/api/worklist/items/{item_id}"): "worklist",
    ("GET", "/api/worklist/queries"): "worklist", ("GET", "/api/worklist/queries/{query_id}"): "worklist",
    ("GET", "/api/worklist/queries/{query_id}/explain/{item_id}"): "worklist",
    ("GET", "/api/worklist/mpps/{uid}"): "worklist", ("GET", "/api/worklist/statuses"): "worklist",
    ("POST", "/api/worklist/items"): "worklist_edit", ("PATCH", "/api/worklist/items/{item_id}"): "worklist_edit",
    ("DELETE", "/api/worklist/items/{item_id}"): "worklist_edit",
    ("POST", "/api/worklist/items/{item_id}/cancel"): "worklist_edit",
    ("GET", "/api/audit"): "admin", ("GET", "/api/audit/actions"): "admin",
    ("GET", "/api/users"): "admin", ("POST", "/api/users"): "admin", ("PATCH", "/api/users/{name}"): "admin",
    ("GET", "/api/users/{name}/tokens"): "admin", ("POST", "/api/users/{name}/tokens"): "admin",
    ("DELETE", "/api/tokens/{token_id}"): "admin",
    ("POST", "/api/studies/{uid}/deidentify"): "export", ("GET", "/api/studies/{uid}/deidentified.zip"): "export",
    ("GET", "/api/deid/mappings"): "admin",
    ("GET", "/api/hl7/messages"): "admin", ("GET", "/api/hl7/messages/{message_id}"): "admin",
    ("POST", "/api/hl7/messages/{message_id}/replay"): "admin",
    ("GET", "/api/rt/studies/{study}"): "read", ("GET", "/api/rt/series/{series}"): "read",  # issue 13
    ("GET", "/api/rt/structure-sets/{uid}/rois"): "read", ("GET", "/api/rt/structure-sets/{uid}/contours"): "read",
    ("GET", "/api/rt/doses/{uid}/slice"): "read", ("GET", "/api/rt/doses/{uid}/isodose"): "read",
    ("GET", "/api/rt/dvh"): "read", ("GET", "/api/rt/plans/{uid}"): "read",
    # issue 14: routing rules decide where data goes (changing them: admin); seeing them and the deliveries,
    # retrying one, is sending
    ("GET", "/api/routing/rules"): "send", ("GET", "/api/routing/rules/{name}"): "send",
    ("PUT", "/api/routing/rules/{name}"): "admin", ("DELETE", "/api/routing/rules/{name}"): "admin",
    ("GET", "/api/routing/jobs"): "send", ("POST", "/api/routing/jobs/{job_id}/retry"): "send",
}
# The static files under the mounts: scripts and styles for anyone (the login page needs them, they hold no
# patient data), the pages for users, the audit page for admins.
MOUNTED = {"/ui": [("/ui/js/main.js", ANYONE), ("/ui/css/theme.css", ANYONE), ("/ui/", ANY_USER),
                   ("/ui/index.html", ANY_USER), ("/ui/audit.html", "admin"), ("/ui/hl7.html", "admin"),
                   ("/ui/remote.html", ANY_USER), ("/ui/routing.html", "send")],
           "/docs/assets": [("/docs/assets/redoc/redoc.standalone.js", ANYONE)]}
VALUES = {"uid": "1.2.3", "study": "1.2.3", "series": "1.2.3.4", "sop": "1.2.3.4.5", "frames": "1",
          "tag": "7FE00010", "name": "nosuch", "item_id": "999999", "job_id": "nojob", "query_id": "999999",
          "token_id": "999999", "message_id": "999999"}


def routes(app) -> set[tuple[str, str]]:  # noqa: ANN001 - FastAPI
    """Every (method, path) of the app, mounts as ("MOUNT", prefix), walking included routers (FastAPI keeps
    them as included-router objects with their prefix). Checked against the OpenAPI schema below, so that a
    change in how FastAPI keeps them cannot make routes disappear from this test unnoticed."""
    def walk(items, prefix: str = "") -> Iterator[tuple[str, str]]:
        for r in items:
            if hasattr(r, "original_router"):
                yield from walk(r.original_router.routes, prefix + r.include_context.prefix)
            elif isinstance(r, Mount):
                yield "MOUNT", prefix + r.path
            else:
                yield from ((m, prefix + r.path) for m in (getattr(r, "methods", None) or ()) if m != "HEAD")
    return set(walk(app.routes))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("auth") / "data"
    pacs = Pacs(config.Settings(data_dir=data, http_auth="on"))
    tokens = {}
    for role in ROLE_ABILITIES:
        pacs.users.add(f"{role}-user", role, "a long enough password")
        tokens[role] = pacs.users.create_token(f"{role}-user")[1]
    app = create_app(pacs)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield app, client, tokens
    pacs.close()


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: VALUES[m.group(1)], path)


def cases(app) -> list[tuple[str, str, str]]:  # noqa: ANN001
    found = routes(app)
    schema = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    assert schema <= found, f"routes in the OpenAPI schema the walk missed: {sorted(schema - found)}"
    out = []
    for method, path in sorted(found):
        if method == "MOUNT":
            assert path in MOUNTED, f"a mount this test does not know: {path}"
            out += [("GET", url, needed) for url, needed in MOUNTED[path]]
            continue
        assert (method, path) in EXPECTED, f"a route this test does not know: {method} {path}"
        out.append((method, concrete(path), EXPECTED[(method, path)]))
    return out


def refused(r) -> bool:  # noqa: ANN001 - a response
    """The login check's refusal: 403, or 401 with a challenge (a failed login answers 401 without one)."""
    return r.status_code == 403 or (r.status_code == 401 and "www-authenticate" in r.headers)


def test_every_route_refuses_the_anonymous_and_the_roles_without_its_permission(site) -> None:
    app, client, tokens = site
    every = cases(app)
    assert len(every) > 70  # the walk found the app's routes, not a handful of them
    for method, url, needed in every:
        anonymous = client.request(method, url, headers={"Accept": "application/json"}, follow_redirects=False)
        if needed == ANYONE:
            assert not refused(anonymous), f"{method} {url} refused anonymously"
        else:
            assert anonymous.status_code == 401, f"{method} {url} answered anonymously: {anonymous.status_code}"
            assert 'Bearer realm="hounsfield"' in anonymous.headers.get_list("www-authenticate")
        for role, abilities in ROLE_ABILITIES.items():
            r = client.request(method, url, headers={"Authorization": f"Bearer {tokens[role]}",
                                                     "Accept": "application/json"}, follow_redirects=False)
            allowed = needed in (ANYONE, ANY_USER) or needed in abilities
            if allowed:
                assert not refused(r), f"{role}: {method} {url} refused ({r.status_code} {r.text})"
            else:
                assert r.status_code == 403, f"{role}: {method} {url} answered {r.status_code}"
                assert r.json()["error"] == "Forbidden"


def test_a_page_sends_an_anonymous_browser_to_the_login_form(site) -> None:
    _, client, _ = site
    for url in ("/ui/", "/worklist", "/docs", "/ui/index.html?study=1.2.3"):
        r = client.get(url, headers={"Accept": "text/html"}, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"].startswith("/login?next=%2F")
    r = client.get("/ui/?study=1.2.3", headers={"Accept": "text/html"})  # followed: the login form
    assert r.status_code == 200 and 'name="password"' in r.text and 'value="/ui/?study=1.2.3"' in r.text


def test_bad_credentials_are_refused_and_never_fall_back_to_anything(site) -> None:
    _, client, tokens = site
    for value in ("Bearer hf_not-a-token", "Bearer " + tokens["admin"][:-2], "Basic !!!notbase64",
                  "Basic " + __import__("base64").b64encode(b"admin-user:wrong password").decode(),
                  "Digest whatever", "Bearer " + "x" * 100000):
        r = client.get("/api/studies", headers={"Authorization": value})
        assert r.status_code == 401, value[:40]
    ok = client.get("/api/studies", headers={"Authorization": "Basic " + __import__("base64").b64encode(
        b"viewer-user:a long enough password").decode()})
    assert ok.status_code == 200


def test_a_revoked_token_and_a_disabled_user_are_refused_at_once(site) -> None:
    app, client, _ = site
    users = app.state.pacs.users
    users.add("short-lived", "viewer", "a long enough password")
    token_id, token = users.create_token("short-lived")
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/studies", headers=auth).status_code == 200
    users.revoke_token(token_id)
    assert client.get("/api/studies", headers=auth).status_code == 401
    _, second = users.create_token("short-lived")
    basic = {"Authorization": "Basic " + __import__("base64").b64encode(
        b"short-lived:a long enough password").decode()}
    assert client.get("/api/studies", headers={"Authorization": f"Bearer {second}"}).status_code == 200
    assert client.get("/api/studies", headers=basic).status_code == 200  # now remembered
    users.set_disabled("short-lived", True)
    assert client.get("/api/studies", headers={"Authorization": f"Bearer {second}"}).status_code == 401
    assert client.get("/api/studies", headers=basic).status_code == 401


def test_an_expired_token_is_refused(site) -> None:
    from datetime import timedelta

    app, client, _ = site
    users = app.state.pacs.users
    users.add("expiring", "viewer", "a long enough password")
    _, token = users.create_token("expiring", expires_in=timedelta(seconds=-1))
    assert client.get("/api/studies", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_logins_follow_the_listening_address_and_the_settings() -> None:
    from hounsfield.web.auth import logins_on

    assert not logins_on(config.Settings(http_host="127.0.0.1"))
    assert logins_on(config.Settings(http_host="0.0.0.0"))
    assert logins_on(config.Settings(http_host="127.0.0.1", http_auth="on"))
    assert not logins_on(config.Settings(http_host="0.0.0.0", insecure_http=True))
    assert not logins_on(config.Settings(http_host="127.0.0.1", http_auth="off"))


def test_a_route_the_table_does_not_name_needs_admin() -> None:
    from hounsfield.web.auth import required_permission

    for method, path in (("GET", "/api/users"), ("POST", "/api/anything/new"), ("GET", "/api/studies/1/2/3"),
                         ("PUT", "/dicom-web/studies/1"), ("GET", "/ui/audit.html"), ("GET", "/../api/peers")):
        assert required_permission(method, path) == "admin", (method, path)


def test_an_admin_manages_users_over_rest_and_the_changes_take_effect(site) -> None:
    _, client, tokens = site
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    made = client.post("/api/users", json={"name": "rest-made", "role": "viewer", "password": "long enough pw"},
                       headers=admin)
    assert made.status_code == 201 and made.json()["role"] == "viewer"
    assert client.post("/api/users", json={"name": "rest-made", "role": "viewer", "password": "long enough pw"},
                       headers=admin).status_code == 409
    assert client.post("/api/users", json={"name": "x", "role": "viewer", "password": "short"},
                       headers=admin).status_code == 400
    new = client.post("/api/users/rest-made/tokens", json={"label": "t"}, headers=admin).json()
    theirs = {"Authorization": f"Bearer {new['token']}"}
    assert client.get("/api/studies", headers=theirs).status_code == 200
    assert client.delete("/api/studies/1.2.3", headers=theirs).status_code == 403
    changed = client.patch("/api/users/rest-made", json={"role": "admin"}, headers=admin)
    assert changed.status_code == 200 and changed.json()["role"] == "admin"
    assert client.delete("/api/studies/1.2.3", headers=theirs).status_code == 404  # now allowed: not there
    listed = client.get("/api/users/rest-made/tokens", headers=admin).json()
    assert [t["label"] for t in listed] == ["t"] and "token" not in listed[0]
    assert client.delete(f"/api/tokens/{new['id']}", headers=admin).json()["revoked"] is True
    assert client.get("/api/studies", headers=theirs).status_code == 401
    assert client.patch("/api/users/nobody", json={"disabled": True}, headers=admin).status_code == 404
    assert client.patch("/api/users/rest-made", json={"role": "god"}, headers=admin).status_code == 400
    assert all("password" not in u and "password_hash" not in u for u in client.get("/api/users", headers=admin).json())
