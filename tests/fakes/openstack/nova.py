"""Nova (compute v2.1) of the fake: microversions, flavors, servers, keypairs, limits, AZs.

Behaves as Nova does where our factory depends on it: `user_data` over 65,535 base64
characters is a 400; `min_count`/`max_count` > 1 names servers `<name>-<i>` (i from 1)
with `OS-EXT-SRV-ATTR:launch_index` from 0; listings are newest first and paginated with
`limit`/`marker` and a `servers_links` next link whenever a page is full; quotas are a 403.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Blueprint, Response, current_app, g, jsonify, request

from tests.fakes.openstack.state import CloudState, Server, iso, now_utc
from tests.fakes.openstack.web import ApiError, base_url, cloud, int_param, json_body, public

bp = Blueprint("nova", __name__, url_prefix="/compute")

MIN_VERSION = (2, 1)
USER_DATA_MAX = 65535  # characters of base64, Nova's API schema maxLength
METADATA_MAX_ITEMS = 128
STATUSES = {"ACTIVE", "BUILD", "ERROR", "SHUTOFF", "DELETED", "REBOOT", "PAUSED", "SUSPENDED"}


def bad_request(message: str) -> ApiError:
    return ApiError(400, {"badRequest": {"code": 400, "message": message}})


def not_found(message: str) -> ApiError:
    return ApiError(404, {"itemNotFound": {"code": 404, "message": message}})


def conflict(message: str) -> ApiError:
    return ApiError(409, {"conflictingRequest": {"code": 409, "message": message}})


def forbidden(message: str) -> ApiError:
    return ApiError(403, {"forbidden": {"code": 403, "message": message}})


def max_version() -> tuple[int, int]:
    return tuple(current_app.config["FAKE_NOVA_MAX_VERSION"])  # type: ignore[return-value]


def fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


# -- microversions ---------------------------------------------------------------------


@bp.before_request
def negotiate_microversion() -> None:
    """Read `OpenStack-API-Version: compute X.Y` (or the legacy header); 406 outside range."""
    raw = None
    header = request.headers.get("OpenStack-API-Version", "")
    parts = header.split()
    if len(parts) == 2 and parts[0].lower() == "compute":
        raw = parts[1]
    raw = raw or request.headers.get("X-OpenStack-Nova-API-Version")
    top = max_version()
    if raw is None:
        g.microversion = MIN_VERSION
        return
    if raw.lower() == "latest":
        g.microversion = top
        return
    match = re.fullmatch(r"(\d+)\.(\d+)", raw.strip())
    if match is None:
        raise bad_request(f"API Version String {raw} is of invalid format.")
    wanted = (int(match[1]), int(match[2]))
    if not MIN_VERSION <= wanted <= top:
        raise ApiError(
            406,
            {
                "computeFault": {
                    "code": 406,
                    "message": f"Version {raw} is not supported by the API. "
                    f"Minimum is {fmt(MIN_VERSION)} and maximum is {fmt(top)}.",
                }
            },
        )
    g.microversion = wanted


@bp.after_request
def microversion_headers(response: Response) -> Response:
    version = fmt(getattr(g, "microversion", MIN_VERSION))
    response.headers["OpenStack-API-Version"] = f"compute {version}"
    response.headers["X-OpenStack-Nova-API-Version"] = version
    response.headers["Vary"] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
    return response


def at_least(major: int, minor: int) -> bool:
    return bool(g.microversion >= (major, minor))


# -- discovery -------------------------------------------------------------------------


def _version_doc() -> dict[str, Any]:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": fmt(max_version()),
        "min_version": fmt(MIN_VERSION),
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": f"{base_url()}/compute/v2.1/"}],
        "media-types": [
            {
                "base": "application/json",
                "type": "application/vnd.openstack.compute+json;version=2.1",
            }
        ],
    }


@bp.get("")
@public
def versions() -> Response:
    return jsonify({"versions": [_version_doc()]})


@bp.get("/v2.1")
@public
def version() -> Response:
    return jsonify({"version": _version_doc()})


# -- flavors ---------------------------------------------------------------------------


def _link(kind: str, item_id: str) -> list[dict[str, str]]:
    root = base_url()
    return [
        {"rel": "self", "href": f"{root}/compute/v2.1/{kind}/{item_id}"},
        {"rel": "bookmark", "href": f"{root}/compute/{kind}/{item_id}"},
    ]


def _flavor_view(flavor: dict[str, Any], *, detail: bool) -> dict[str, Any]:
    view: dict[str, Any] = {"id": flavor["id"], "name": flavor["name"]}
    if at_least(2, 55):
        view["description"] = flavor["description"]
    if detail:
        view.update(
            ram=flavor["ram"],
            disk=flavor["disk"],
            vcpus=flavor["vcpus"],
            swap=flavor["swap"] if at_least(2, 75) else (flavor["swap"] or ""),
            rxtx_factor=flavor["rxtx_factor"],
            **{
                "OS-FLV-EXT-DATA:ephemeral": flavor["ephemeral"],
                "OS-FLV-DISABLED:disabled": False,
                "os-flavor-access:is_public": flavor["is_public"],
            },
        )
        if at_least(2, 61):
            view["extra_specs"] = flavor["extra_specs"]
    view["links"] = _link("flavors", flavor["id"])
    return view


def _flavor(flavor_id: str) -> dict[str, Any]:
    flavor = cloud().flavors.get(flavor_id)
    if flavor is None:
        raise not_found(f"Flavor {flavor_id} could not be found.")
    return flavor


@bp.get("/v2.1/flavors")
def list_flavors() -> Response:
    with cloud().lock:
        return jsonify({"flavors": [_flavor_view(f, detail=False) for f in _flavors()]})


@bp.get("/v2.1/flavors/detail")
def list_flavors_detail() -> Response:
    with cloud().lock:
        return jsonify({"flavors": [_flavor_view(f, detail=True) for f in _flavors()]})


def _flavors() -> list[dict[str, Any]]:
    return sorted(cloud().flavors.values(), key=lambda f: (f["ram"], f["id"]))


@bp.get("/v2.1/flavors/<flavor_id>")
def get_flavor(flavor_id: str) -> Response:
    with cloud().lock:
        return jsonify({"flavor": _flavor_view(_flavor(flavor_id), detail=True)})


@bp.get("/v2.1/flavors/<flavor_id>/os-extra_specs")
def flavor_extra_specs(flavor_id: str) -> Response:
    with cloud().lock:
        return jsonify({"extra_specs": dict(_flavor(flavor_id)["extra_specs"])})


# -- servers: views ----------------------------------------------------------------------


def _server_view(state: CloudState, server: Server) -> dict[str, Any]:
    flavor = state.flavors.get(server.flavor_id, {"id": server.flavor_id})
    if at_least(2, 47):
        flavor_view: dict[str, Any] = {
            "vcpus": flavor.get("vcpus", 0),
            "ram": flavor.get("ram", 0),
            "disk": flavor.get("disk", 0),
            "ephemeral": flavor.get("ephemeral", 0),
            "swap": flavor.get("swap", 0),
            "original_name": flavor.get("name", server.flavor_id),
            "extra_specs": dict(flavor.get("extra_specs", {})),
        }
    else:
        flavor_view = {"id": server.flavor_id, "links": _link("flavors", server.flavor_id)[1:]}
    addresses: dict[str, list[dict[str, Any]]] = {}
    floating_ips = list(state.floating_ips.values())
    for port_id in server.port_ids:
        port = state.ports.get(port_id)
        if port is None:
            continue
        net_name = state.networks[port["network_id"]]["name"]
        floating = [f["floating_ip_address"] for f in floating_ips if f["port_id"] == port_id]
        for kind, addr in [("fixed", ip["ip_address"]) for ip in port["fixed_ips"]] + [
            ("floating", addr) for addr in floating
        ]:
            addresses.setdefault(net_name, []).append(
                {
                    "version": 4,
                    "addr": addr,
                    "OS-EXT-IPS:type": kind,
                    "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
                }
            )
    creds = state.credentials
    view: dict[str, Any] = {
        "id": server.id,
        "name": server.name,
        "status": server.status,
        "tenant_id": creds.project_id,
        "user_id": creds.user_id,
        "metadata": dict(server.metadata),
        "hostId": hashlib.sha224(creds.project_id.encode()).hexdigest(),
        "image": {"id": server.image_id, "links": _link("images", server.image_id)[1:]},
        "flavor": flavor_view,
        "created": iso(server.created_at),
        "updated": iso(server.updated_at or server.created_at),
        "addresses": addresses,
        "accessIPv4": "",
        "accessIPv6": "",
        "links": _link("servers", server.id),
        "key_name": server.key_name,
        "config_drive": server.config_drive,
        "progress": 100 if server.status == "ACTIVE" else 0,
        "security_groups": [{"name": name} for name in server.security_groups],
        "os-extended-volumes:volumes_attached": [],
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": server.availability_zone,
        "OS-EXT-STS:vm_state": server.vm_state,
        "OS-EXT-STS:task_state": server.task_state,
        "OS-EXT-STS:power_state": server.power_state,
        "OS-SRV-USG:launched_at": iso(server.launched_at) if server.launched_at else None,
        "OS-SRV-USG:terminated_at": None,
        "OS-EXT-SRV-ATTR:launch_index": server.launch_index,
        "OS-EXT-SRV-ATTR:reservation_id": server.reservation_id,
    }
    if at_least(2, 3):
        view["OS-EXT-SRV-ATTR:user_data"] = server.user_data
        view["OS-EXT-SRV-ATTR:hostname"] = re.sub(r"[^a-z0-9-]", "-", server.name.lower())
    if at_least(2, 9):
        view["locked"] = False
    if at_least(2, 19):
        view["description"] = server.description
    if at_least(2, 26):
        view["tags"] = []
    if at_least(2, 73):
        view["locked_reason"] = None
    if server.fault is not None:
        view["fault"] = dict(server.fault)
    return view


def _server(state: CloudState, server_id: str) -> Server:
    state.advance()
    server = state.servers.get(server_id)
    if server is None:
        raise not_found(f"Instance {server_id} could not be found.")
    return server


# -- servers: list -----------------------------------------------------------------------


def _filtered(state: CloudState) -> list[Server]:
    """The servers matching the query's filters, newest first (Nova's default sort)."""
    servers = sorted(state.servers.values(), key=lambda s: s.seq, reverse=True)
    name = request.args.get("name")
    if name is not None:
        try:
            pattern = re.compile(name)
        except re.error:
            raise bad_request(f"Invalid regular expression in filter name: {name}.") from None
        servers = [s for s in servers if pattern.search(s.name)]
    status = request.args.get("status")
    if status is not None:
        if status.upper() not in STATUSES:
            raise bad_request(f"Invalid server status: {status}.")
        servers = [s for s in servers if s.status == status.upper()]
    for param, attr in (
        ("reservation_id", "reservation_id"),
        ("image", "image_id"),
        ("flavor", "flavor_id"),
        ("availability_zone", "availability_zone"),
        ("key_name", "key_name"),
    ):
        wanted = request.args.get(param)
        if wanted is not None:
            servers = [s for s in servers if getattr(s, attr) == wanted]
    return servers


def _page(servers: list[Server], path: str) -> tuple[list[Server], list[dict[str, str]]]:
    state = cloud()
    limit = int_param("limit", bad_request)
    limit = state.max_limit if limit is None else min(limit, state.max_limit)
    marker = request.args.get("marker")
    if marker is not None:
        ids = [s.id for s in servers]
        if marker not in ids:
            raise bad_request(f"marker [{marker}] not found")
        servers = servers[ids.index(marker) + 1 :]
    page = servers[:limit]
    links = []
    if page and len(page) == limit:
        query = {k: v for k, v in request.args.items() if k not in ("limit", "marker")}
        query.update(limit=str(limit), marker=page[-1].id)
        encoded = "&".join(f"{k}={v}" for k, v in query.items())
        links.append({"rel": "next", "href": f"{base_url()}/compute/v2.1/{path}?{encoded}"})
    return page, links


@bp.get("/v2.1/servers")
def list_servers() -> Response:
    state = cloud()
    with state.lock:
        state.advance()
        page, links = _page(_filtered(state), "servers")
        body: dict[str, Any] = {
            "servers": [{"id": s.id, "name": s.name, "links": _link("servers", s.id)} for s in page]
        }
    if links:
        body["servers_links"] = links
    return jsonify(body)


@bp.get("/v2.1/servers/detail")
def list_servers_detail() -> Response:
    state = cloud()
    with state.lock:
        state.advance()
        page, links = _page(_filtered(state), "servers/detail")
        body: dict[str, Any] = {"servers": [_server_view(state, s) for s in page]}
    if links:
        body["servers_links"] = links
    return jsonify(body)


@bp.get("/v2.1/servers/<server_id>")
def get_server(server_id: str) -> Response:
    state = cloud()
    with state.lock:
        return jsonify({"server": _server_view(state, _server(state, server_id))})


@bp.delete("/v2.1/servers/<server_id>")
def delete_server(server_id: str) -> tuple[str, int]:
    state = cloud()
    with state.lock:
        _server(state, server_id)
        state.delete_server(server_id)
    return "", 204


@bp.put("/v2.1/servers/<server_id>")
def update_server(server_id: str) -> Response:
    state = cloud()
    body = json_body().get("server")
    if not isinstance(body, dict):
        raise bad_request("Invalid input for field/attribute server.")
    with state.lock:
        server = _server(state, server_id)
        if "name" in body:
            server.name = _name(body["name"])
        if "description" in body:
            server.description = body["description"]
        server.updated_at = now_utc()
        return jsonify({"server": _server_view(state, server)})


# -- servers: create ---------------------------------------------------------------------


def _name(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= 255:
        raise bad_request("Invalid input for field/attribute name. Value must be 1-255 characters.")
    return value


def _ref(value: object, field: str) -> str:
    """An id, or the last path segment of a link (Nova accepts both)."""
    if not isinstance(value, str) or not value:
        raise bad_request(f"Invalid input for field/attribute {field}.")
    return value.rstrip("/").rsplit("/", 1)[-1]


def _user_data(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request("Invalid input for field/attribute user_data. Value is not a string.")
    if len(value) > USER_DATA_MAX:
        raise bad_request(
            f"Invalid input for field/attribute user_data. Value is too long "
            f"({len(value)} characters; the maximum is {USER_DATA_MAX})."
        )
    try:
        base64.b64decode(value)
    except (binascii.Error, ValueError):
        raise bad_request(
            "Invalid input for field/attribute user_data. Value is not valid base64."
        ) from None
    return value


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and 1 <= len(k) <= 255 and len(v) <= 255
        for k, v in value.items()
    ):
        raise bad_request(
            "Invalid input for field/attribute metadata. Keys and values must be strings "
            "of at most 255 characters."
        )
    if len(value) > METADATA_MAX_ITEMS:
        raise forbidden("Quota exceeded for metadata_items: too many metadata items.")
    return dict(value)


def _count(body: dict[str, Any], field: str, default: int) -> int:
    value = body.get(field, default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad_request(f"Invalid input for field/attribute {field}. Value: {value}.")
    return value


def _networks(state: CloudState, value: object) -> list[str]:
    """The network ids a new server gets a port on."""
    if value is None:
        if at_least(2, 37):
            raise bad_request(
                "Invalid input for field/attribute server. 'networks' is a required property."
            )
        value = "auto"
    if value == "none":
        return []
    if value == "auto":
        private = [n["id"] for n in state.networks.values() if not n["router:external"]]
        if len(private) != 1:
            raise bad_request(
                "Multiple possible networks found, use a Network ID to be more specific."
            )
        return private
    if not isinstance(value, list):
        raise bad_request("Invalid input for field/attribute networks.")
    ids = []
    for item in value:
        if not isinstance(item, dict):
            raise bad_request("Invalid input for field/attribute networks.")
        if "port" in item:
            port = state.ports.get(str(item["port"]))
            if port is None:
                raise bad_request(f"Port id {item['port']} could not be found.")
            ids.append(port["network_id"])
            continue
        network_id = item.get("uuid")
        if network_id not in state.networks:
            raise bad_request(f"Network {network_id} could not be found.")
        ids.append(network_id)
    return ids


def _check_quota(state: CloudState, flavor: dict[str, Any], min_count: int, max_count: int) -> int:
    """How many of max_count fit in the quota; a 403 when not even min_count does."""
    used = state.usage()
    room = state.quota["instances"] - used["instances"]
    if flavor["vcpus"]:
        room = min(room, (state.quota["cores"] - used["cores"]) // flavor["vcpus"])
    if flavor["ram"]:
        room = min(room, (state.quota["ram"] - used["ram"]) // flavor["ram"])
    if room < min_count:
        raise forbidden(
            f"Quota exceeded for instances: Requested {min_count}, but already used "
            f"{used['instances']} of {state.quota['instances']} instances"
        )
    return min(room, max_count)


@bp.post("/v2.1/servers")
def create_server() -> tuple[Response, int]:
    body = json_body().get("server")
    if not isinstance(body, dict):
        raise bad_request("Invalid input for field/attribute server. 'server' is required.")
    name = _name(body.get("name"))
    image_id = _ref(body.get("imageRef"), "imageRef")
    flavor_id = _ref(body.get("flavorRef"), "flavorRef")
    user_data = _user_data(body.get("user_data"))
    metadata = _metadata(body.get("metadata"))
    min_count = _count(body, "min_count", 1)
    max_count = _count(body, "max_count", min_count)
    if min_count > max_count:
        raise bad_request("min_count must be <= max_count")
    state = cloud()
    with state.lock:
        image = state.images.get(image_id)
        if image is None or image["status"] != "active":
            raise bad_request("Can not find requested image")
        flavor = state.flavors.get(flavor_id)
        if flavor is None:
            raise bad_request(f"Flavor {flavor_id} could not be found.")
        key_name = body.get("key_name")
        if key_name is not None and key_name not in state.keypairs:
            raise bad_request("Invalid key_name provided.")
        network_ids = _networks(state, body.get("networks"))
        count = _check_quota(state, flavor, min_count, max_count)
        reservation = "r-" + secrets.token_hex(4)
        created = now_utc()
        ready = time.monotonic() + state.boot_delay
        servers = []
        for index in range(count):
            server = Server(
                id=str(uuid.uuid4()),
                seq=state.next_seq(),
                name=f"{name}-{index + 1}" if count > 1 else name,
                image_id=image_id,
                flavor_id=flavor_id,
                created_at=created,
                ready_at=ready,
                user_data=user_data,
                metadata=dict(metadata),
                key_name=key_name,
                launch_index=index,
                reservation_id=reservation,
                availability_zone=body.get("availability_zone") or "nova",
                config_drive="True" if body.get("config_drive") else "",
                description=body.get("description"),
                security_groups=[
                    str(group.get("name"))
                    for group in body.get("security_groups") or [{"name": "default"}]
                    if isinstance(group, dict)
                ],
            )
            server.port_ids = [state.create_port(net, server.id)["id"] for net in network_ids]
            state.add_server(server)
            servers.append(server)
        state.advance()
    if body.get("return_reservation_id"):
        return jsonify({"reservation_id": reservation}), 202
    first = servers[0]
    return jsonify(
        {
            "server": {
                "id": first.id,
                "links": _link("servers", first.id),
                "OS-DCF:diskConfig": "MANUAL",
                "security_groups": [{"name": n} for n in first.security_groups],
                "adminPass": secrets.token_urlsafe(9),
            }
        }
    ), 202


# -- server metadata ---------------------------------------------------------------------


@bp.get("/v2.1/servers/<server_id>/metadata")
def get_metadata(server_id: str) -> Response:
    state = cloud()
    with state.lock:
        return jsonify({"metadata": dict(_server(state, server_id).metadata)})


@bp.route("/v2.1/servers/<server_id>/metadata", methods=["POST", "PUT"])
def set_metadata(server_id: str) -> Response:
    """POST merges into the metadata, PUT replaces it (as Nova does)."""
    new = _metadata(json_body().get("metadata"))
    state = cloud()
    with state.lock:
        server = _server(state, server_id)
        merged = {**server.metadata, **new} if request.method == "POST" else new
        if len(merged) > METADATA_MAX_ITEMS:
            raise forbidden("Quota exceeded for metadata_items: too many metadata items.")
        server.metadata = merged
        server.updated_at = now_utc()
        return jsonify({"metadata": dict(merged)})


@bp.get("/v2.1/servers/<server_id>/metadata/<key>")
def get_metadata_item(server_id: str, key: str) -> Response:
    state = cloud()
    with state.lock:
        metadata = _server(state, server_id).metadata
        if key not in metadata:
            raise not_found("Metadata item was not found")
        return jsonify({"meta": {key: metadata[key]}})


@bp.put("/v2.1/servers/<server_id>/metadata/<key>")
def set_metadata_item(server_id: str, key: str) -> Response:
    meta = json_body().get("meta")
    if not isinstance(meta, dict) or list(meta) != [key]:
        raise bad_request("Request body and URI mismatch")
    _metadata(meta)
    state = cloud()
    with state.lock:
        server = _server(state, server_id)
        server.metadata[key] = meta[key]
        server.updated_at = now_utc()
        return jsonify({"meta": {key: meta[key]}})


@bp.delete("/v2.1/servers/<server_id>/metadata/<key>")
def delete_metadata_item(server_id: str, key: str) -> tuple[str, int]:
    state = cloud()
    with state.lock:
        metadata = _server(state, server_id).metadata
        if key not in metadata:
            raise not_found("Metadata item was not found")
        del metadata[key]
    return "", 204


# -- server actions ----------------------------------------------------------------------


@bp.post("/v2.1/servers/<server_id>/action")
def server_action(server_id: str) -> tuple[Response | str, int] | tuple[str, int, dict[str, str]]:
    body = json_body()
    if len(body) != 1:
        raise bad_request("Exactly one action is expected in the request body.")
    action, args = next(iter(body.items()))
    state = cloud()
    with state.lock:
        server = _server(state, server_id)
        if action == "createImage":
            return _create_image(state, server, args)
        transitions = {
            "os-stop": ({"ACTIVE"}, ("SHUTOFF", "stopped", 4)),
            "os-start": ({"SHUTOFF"}, ("ACTIVE", "active", 1)),
            "reboot": ({"ACTIVE", "SHUTOFF"}, ("ACTIVE", "active", 1)),
        }
        if action not in transitions:
            raise bad_request(f"The fake does not implement the server action {action}.")
        allowed, (status, vm_state, power) = transitions[action]
        if server.status not in allowed:
            raise conflict(
                f"Cannot '{action}' instance {server_id} while it is in vm_state {server.vm_state}"
            )
        server.status, server.vm_state, server.power_state = status, vm_state, power
        server.updated_at = now_utc()
    return "", 202


def _create_image(
    state: CloudState, server: Server, args: object
) -> tuple[Response, int] | tuple[str, int, dict[str, str]]:
    if not isinstance(args, dict) or not isinstance(args.get("name"), str):
        raise bad_request("Invalid input for field/attribute createImage. 'name' is required.")
    if server.status not in ("ACTIVE", "SHUTOFF"):
        raise conflict(
            f"Cannot 'createImage' instance {server.id} while it is in vm_state {server.vm_state}"
        )
    base = state.images.get(server.image_id, {})
    properties = {
        **{k: v for k, v in _metadata(args.get("metadata")).items()},
        "image_type": "snapshot",
        "instance_uuid": server.id,
        "base_image_ref": server.image_id,
        "user_id": state.credentials.user_id,
    }
    image = state.add_image(
        name=args["name"],
        data=b"snapshot of " + server.id.encode(),
        properties=properties,
        disk_format=base.get("disk_format", "qcow2"),
        container_format=base.get("container_format", "bare"),
        visibility="private",
    )
    if at_least(2, 45):
        return jsonify({"image_id": image["id"]}), 202
    return "", 202, {"Location": f"{base_url()}/image/v2/images/{image['id']}"}


# -- keypairs ----------------------------------------------------------------------------


def _fingerprint(public_key: str) -> str:
    try:
        blob = base64.b64decode(public_key.split()[1])
    except (IndexError, binascii.Error, ValueError):
        raise bad_request("Keypair data is invalid: failed to decode the public key.") from None
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _keypair_view(keypair: dict[str, Any], *, detail: bool) -> dict[str, Any]:
    view = {k: keypair[k] for k in ("name", "public_key", "fingerprint", "type")}
    if detail:
        view.update(
            user_id=keypair["user_id"],
            created_at=keypair["created_at"],
            id=keypair["id"],
            deleted=False,
            deleted_at=None,
            updated_at=None,
        )
    return view


@bp.get("/v2.1/os-keypairs")
def list_keypairs() -> Response:
    with cloud().lock:
        views = [_keypair_view(k, detail=False) for k in cloud().keypairs.values()]
    return jsonify({"keypairs": [{"keypair": v} for v in views]})


@bp.post("/v2.1/os-keypairs")
def create_keypair() -> tuple[Response, int]:
    body = json_body().get("keypair")
    if not isinstance(body, dict):
        raise bad_request("Invalid input for field/attribute keypair.")
    name = body.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9 _.@-]{1,255}", name):
        raise bad_request("Keypair data is invalid: the name must be 1-255 safe characters.")
    private_key = None
    public_key = body.get("public_key")
    if public_key is None:
        if at_least(2, 92):
            raise bad_request("Invalid input for field/attribute keypair. Missing public_key.")
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode()
        public_key = (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
            + " Generated-by-Nova"
        )
    if not isinstance(public_key, str):
        raise bad_request("Keypair data is invalid: public_key must be a string.")
    state = cloud()
    with state.lock:
        if name in state.keypairs:
            raise conflict(f"Key pair '{name}' already exists.")
        keypair = {
            "name": name,
            "public_key": public_key,
            "fingerprint": _fingerprint(public_key),
            "type": body.get("type", "ssh"),
            "user_id": state.credentials.user_id,
            "created_at": iso(now_utc()),
            "id": len(state.keypairs) + 1,
        }
        state.keypairs[name] = keypair
    view = _keypair_view(keypair, detail=False)
    view["user_id"] = keypair["user_id"]
    if private_key is not None:
        view["private_key"] = private_key
    return jsonify({"keypair": view}), 201 if at_least(2, 2) else 200


@bp.get("/v2.1/os-keypairs/<name>")
def get_keypair(name: str) -> Response:
    with cloud().lock:
        keypair = cloud().keypairs.get(name)
        if keypair is None:
            raise not_found(f"Keypair {name} not found for user {cloud().credentials.user_id}")
        return jsonify({"keypair": _keypair_view(keypair, detail=True)})


@bp.delete("/v2.1/os-keypairs/<name>")
def delete_keypair(name: str) -> tuple[str, int]:
    with cloud().lock:
        if cloud().keypairs.pop(name, None) is None:
            raise not_found(f"Keypair {name} not found for user {cloud().credentials.user_id}")
    return "", 202 if not at_least(2, 2) else 204


# -- limits and availability zones ---------------------------------------------------------


@bp.get("/v2.1/limits")
def limits() -> Response:
    state = cloud()
    with state.lock:
        state.advance()
        used = state.usage()
        absolute: dict[str, int] = {
            "maxTotalInstances": state.quota["instances"],
            "maxTotalCores": state.quota["cores"],
            "maxTotalRAMSize": state.quota["ram"],
            "totalInstancesUsed": used["instances"],
            "totalCoresUsed": used["cores"],
            "totalRAMUsed": used["ram"],
            "maxServerMeta": METADATA_MAX_ITEMS,
            "maxImageMeta": METADATA_MAX_ITEMS,
            "maxTotalKeypairs": 100,
            "maxServerGroups": 10,
            "maxServerGroupMembers": 10,
            "totalServerGroupsUsed": 0,
        }
    if not at_least(2, 36):
        absolute.update(
            maxSecurityGroups=10,
            maxSecurityGroupRules=20,
            maxTotalFloatingIps=10,
            totalSecurityGroupsUsed=0,
            totalFloatingIpsUsed=0,
        )
    if not at_least(2, 57):
        absolute.update(maxPersonality=5, maxPersonalitySize=10240)
    return jsonify({"limits": {"rate": [], "absolute": absolute}})


@bp.get("/v2.1/os-availability-zone")
def availability_zones() -> Response:
    return jsonify(
        {"availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": True}}]}
    )


@bp.get("/v2.1/os-availability-zone/detail")
def availability_zones_detail() -> Response:
    return jsonify(
        {
            "availabilityZoneInfo": [
                {"zoneName": "nova", "zoneState": {"available": True}, "hosts": None}
            ]
        }
    )
