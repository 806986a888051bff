"""Neutron (network v2.0) of the fake: read-only networks, subnets, ports, security groups.

Enough for a server to be created on a network by name or id and for `list_networks`
and friends; ports are made by Nova's server create and go with the server. Lists take
Neutron's field-equality filters and `limit`/`marker` pagination.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from tests.fakes.openstack.web import ApiError, base_url, cloud, int_param, json_body, public

bp = Blueprint("neutron", __name__, url_prefix="/network")

# collection name in URL and body -> (state attribute, singular body key, error type)
COLLECTIONS = {
    "networks": ("networks", "network", "NetworkNotFound"),
    "subnets": ("subnets", "subnet", "SubnetNotFound"),
    "ports": ("ports", "port", "PortNotFound"),
    "security-groups": ("security_groups", "security_group", "SecurityGroupNotFound"),
    "floatingips": ("floating_ips", "floatingip", "FloatingIPNotFound"),
}
EXTENSIONS = (
    ("security-group", "security-group"),
    ("port-security", "Port Security"),
    ("external-net", "Neutron external network"),
    ("quotas", "Quota management support"),
    ("standard-attr-tag", "Tag support for resources with standard attribute"),
)
PAGING_PARAMS = {"limit", "marker", "fields", "sort_key", "sort_dir", "page_reverse"}


def neutron_error(status: int, kind: str, message: str) -> ApiError:
    return ApiError(status, {"NeutronError": {"type": kind, "message": message, "detail": ""}})


def _bad_request(message: str) -> ApiError:
    return neutron_error(400, "HTTPBadRequest", message)


@bp.get("")
@public
def versions() -> Response:
    return jsonify(
        {
            "versions": [
                {
                    "id": "v2.0",
                    "status": "CURRENT",
                    "links": [{"rel": "self", "href": f"{base_url()}/network/v2.0/"}],
                }
            ]
        }
    )


@bp.get("/v2.0")
def resources() -> Response:
    root = f"{base_url()}/network/v2.0"
    return jsonify(
        {
            "resources": [
                {
                    "name": body_key,
                    "collection": name,
                    "links": [{"rel": "self", "href": f"{root}/{name}"}],
                }
                for name, (_, body_key, _) in COLLECTIONS.items()
            ]
        }
    )


@bp.get("/v2.0/extensions")
def extensions() -> Response:
    return jsonify(
        {
            "extensions": [
                {"alias": alias, "name": name, "description": name, "links": [], "updated": ""}
                for alias, name in EXTENSIONS
            ]
        }
    )


def _matches(item: dict[str, Any]) -> bool:
    """Neutron filters: each query field must equal the item's (any of repeated values)."""
    for key in request.args:
        if key in PAGING_PARAMS:
            continue
        wanted = request.args.getlist(key)
        value = item.get(key)
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        if value is not None and shown not in wanted:
            return False
        if value is None and "" not in wanted and "None" not in wanted:
            return False
    return True


def list_collection(collection: str) -> Response:
    attr = COLLECTIONS[collection][0]
    state = cloud()
    with state.lock:
        state.advance()
        items = [dict(item) for item in getattr(state, attr).values() if _matches(item)]
    limit = int_param("limit", _bad_request)
    marker = request.args.get("marker")
    body_key = collection.replace("-", "_")
    body: dict[str, Any] = {}
    if marker is not None:
        ids = [item["id"] for item in items]
        if marker not in ids:
            raise _bad_request(f"Marker {marker} not found.")
        items = items[ids.index(marker) + 1 :]
    if limit:
        items, more = items[:limit], len(items) > limit
        if more:
            href = f"{base_url()}/network/v2.0/{collection}?limit={limit}&marker={items[-1]['id']}"
            body[f"{body_key}_links"] = [{"rel": "next", "href": href}]
    fields = request.args.getlist("fields")
    if fields:
        items = [{k: v for k, v in item.items() if k in fields} for item in items]
    body[body_key] = items
    return jsonify(body)


def get_item(collection: str, item_id: str) -> Response:
    attr, key, error = COLLECTIONS[collection]
    state = cloud()
    with state.lock:
        state.advance()
        item = getattr(state, attr).get(item_id)
        if item is None:
            raise neutron_error(
                404, error, f"{key.replace('_', ' ').title()} {item_id} could not be found."
            )
        return jsonify({key: dict(item)})


for _name in COLLECTIONS:
    bp.add_url_rule(
        f"/v2.0/{_name}", f"list_{_name}", list_collection, defaults={"collection": _name}
    )
    bp.add_url_rule(
        f"/v2.0/{_name}/<item_id>", f"get_{_name}", get_item, defaults={"collection": _name}
    )


@bp.post("/v2.0/floatingips")
def create_floating_ip() -> tuple[Response, int]:
    body = json_body().get("floatingip")
    if not isinstance(body, dict):
        raise _bad_request("Resource body required.")
    state = cloud()
    with state.lock:
        network = state.networks.get(str(body.get("floating_network_id")))
        if network is None or not network["router:external"]:
            raise neutron_error(
                404, "ExternalNetworkNotFound", "External network could not be found."
            )
        port_id = body.get("port_id")
        if port_id is not None and port_id not in state.ports:
            raise neutron_error(404, "PortNotFound", f"Port {port_id} could not be found.")
        fip = state.create_floating_ip(network["id"], port_id)
        return jsonify({"floatingip": dict(fip)}), 201


@bp.put("/v2.0/floatingips/<fip_id>")
def update_floating_ip(fip_id: str) -> Response:
    body = json_body().get("floatingip")
    if not isinstance(body, dict):
        raise _bad_request("Resource body required.")
    state = cloud()
    with state.lock:
        if fip_id not in state.floating_ips:
            raise neutron_error(404, "FloatingIPNotFound", f"Floating IP {fip_id} not found.")
        if "port_id" in body:
            port_id = body["port_id"]
            if port_id is not None and port_id not in state.ports:
                raise neutron_error(404, "PortNotFound", f"Port {port_id} could not be found.")
            state.associate_floating_ip(fip_id, port_id)
        if "description" in body:
            state.floating_ips[fip_id]["description"] = body["description"]
        return jsonify({"floatingip": dict(state.floating_ips[fip_id])})


@bp.delete("/v2.0/floatingips/<fip_id>")
def delete_floating_ip(fip_id: str) -> tuple[str, int]:
    state = cloud()
    with state.lock:
        if state.floating_ips.pop(fip_id, None) is None:
            raise neutron_error(404, "FloatingIPNotFound", f"Floating IP {fip_id} not found.")
    return "", 204
