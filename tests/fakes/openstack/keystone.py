"""Keystone v3 of the fake: version discovery, token issue/validate/revoke, the catalog.

Accepts the `password`, `application_credential` and `token` methods against the one
configured user/project/application credential; anything else is a 401 as Keystone answers.
The catalog points every service back at this server.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from tests.fakes.openstack.state import Credentials, Token, iso, same_secret
from tests.fakes.openstack.web import ApiError, base_url, cloud, json_body, public

bp = Blueprint("keystone", __name__)

REGION = "RegionOne"

# (type, name, path under the fake's root)
SERVICES = (
    ("identity", "keystone", ""),
    ("compute", "nova", "/compute/v2.1"),
    ("network", "neutron", "/network"),
    ("image", "glance", "/image"),
)


def unauthorized(message: str = "The request you have made requires authentication.") -> ApiError:
    return ApiError(
        401,
        {"error": {"code": 401, "message": message, "title": "Unauthorized"}},
        {"WWW-Authenticate": f'Keystone uri="{base_url()}"'},
    )


def _version() -> dict[str, Any]:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base_url()}/v3/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
        ],
    }


@bp.get("/")
@public
def versions() -> tuple[Response, int]:
    return jsonify({"versions": {"values": [_version()]}}), 300


@bp.get("/v3")
@public
def version() -> Response:
    return jsonify({"version": _version()})


@bp.post("/v3/auth/tokens")
@public
def issue_token() -> tuple[Response, int, dict[str, str]]:
    auth = json_body().get("auth")
    if not isinstance(auth, dict) or not isinstance(auth.get("identity"), dict):
        raise ApiError(
            400,
            {
                "error": {
                    "code": 400,
                    "message": "Expecting to find identity in auth.",
                    "title": "Bad Request",
                }
            },
        )
    identity = auth["identity"]
    methods = identity.get("methods")
    if not isinstance(methods, list) or len(methods) != 1:
        raise unauthorized()
    creds = cloud().credentials
    method = methods[0]
    if method == "password":
        _check_password(creds, identity.get("password"))
        scoped = _check_scope(creds, auth.get("scope"))
        app_cred = False
    elif method == "application_credential":
        _check_app_cred(creds, identity.get("application_credential"))
        if auth.get("scope"):
            raise unauthorized("Application credentials cannot request a scope.")
        scoped, app_cred = True, True
    elif method == "token":
        old = cloud().valid_token((identity.get("token") or {}).get("id"))
        if old is None:
            raise unauthorized()
        scoped = _check_scope(creds, auth.get("scope")) or old.scoped
        app_cred = old.app_cred
    else:
        raise unauthorized(f"Attempted to authenticate with an unsupported method {method}.")
    token = cloud().issue_token([method], scoped=scoped, app_cred=app_cred)
    return jsonify({"token": _token_body(token)}), 201, {"X-Subject-Token": token.value}


@bp.get("/v3/auth/tokens")
def validate_token() -> tuple[Response, int, dict[str, str]]:
    subject = request.headers.get("X-Subject-Token")
    token = cloud().valid_token(subject)
    if token is None:
        raise ApiError(
            404,
            {"error": {"code": 404, "message": "Could not find token.", "title": "Not Found"}},
        )
    return jsonify({"token": _token_body(token)}), 200, {"X-Subject-Token": token.value}


@bp.delete("/v3/auth/tokens")
def revoke_token() -> tuple[str, int]:
    state = cloud()
    with state.lock:
        state.tokens.pop(request.headers.get("X-Subject-Token", ""), None)
    return "", 204


@bp.get("/v3/auth/catalog")
def auth_catalog() -> Response:
    return jsonify({"catalog": catalog(), "links": {"self": f"{base_url()}/v3/auth/catalog"}})


def _check_password(creds: Credentials, method: object) -> None:
    user = method.get("user") if isinstance(method, dict) else None
    if not isinstance(user, dict):
        raise unauthorized()
    if "id" in user:
        who = user["id"] == creds.user_id
    else:
        who = user.get("name") == creds.username and creds.domain_matches(user.get("domain"))
    if not (who and same_secret(user.get("password"), creds.password)):
        raise unauthorized()


def _check_app_cred(creds: Credentials, method: object) -> None:
    if not isinstance(method, dict):
        raise unauthorized()
    if "id" in method:
        who = method["id"] == creds.app_cred_id
    else:
        user = method.get("user") or {}
        who = method.get("name") == creds.app_cred_name and (
            user.get("id") == creds.user_id
            or (user.get("name") == creds.username and creds.domain_matches(user.get("domain")))
        )
    if not (who and same_secret(method.get("secret"), creds.app_cred_secret)):
        raise unauthorized()


def _check_scope(creds: Credentials, scope: object) -> bool:
    """True for our project, False for no scope; any other scope is refused."""
    if not scope:
        return False
    project = scope.get("project") if isinstance(scope, dict) else None
    if not isinstance(project, dict):
        raise unauthorized()
    if "id" in project:
        ok = project["id"] == creds.project_id
    else:
        ok = project.get("name") == creds.project_name and creds.domain_matches(
            project.get("domain")
        )
    if not ok:
        raise unauthorized()
    return True


def catalog() -> list[dict[str, Any]]:
    root = base_url()
    return [
        {
            "type": kind,
            "name": name,
            "id": f"{name}-service",
            "endpoints": [
                {
                    "id": f"{name}-{interface}",
                    "interface": interface,
                    "region": REGION,
                    "region_id": REGION,
                    "url": f"{root}{path}",
                }
                for interface in ("public", "internal", "admin")
            ],
        }
        for kind, name, path in SERVICES
    ]


def _token_body(token: Token) -> dict[str, Any]:
    creds = cloud().credentials
    domain = {"id": creds.domain_id, "name": creds.domain_name}
    body: dict[str, Any] = {
        "methods": token.methods,
        "user": {
            "id": creds.user_id,
            "name": creds.username,
            "domain": domain,
            "password_expires_at": None,
        },
        "audit_ids": [token.audit_id],
        "expires_at": iso(token.expires_at, micro=True),
        "issued_at": iso(token.issued_at, micro=True),
    }
    if token.scoped:
        body.update(
            project={"id": creds.project_id, "name": creds.project_name, "domain": domain},
            is_domain=False,
            roles=[
                {"id": "member-role", "name": "member"},
                {"id": "reader-role", "name": "reader"},
            ],
            catalog=catalog(),
        )
    if token.app_cred:
        body["application_credential"] = {
            "id": creds.app_cred_id,
            "name": creds.app_cred_name,
            "restricted": True,
        }
    return body
