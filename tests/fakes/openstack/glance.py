"""Glance (image v2) of the fake: discovery, image records, data upload, JSON-patch updates.

Images are created `queued` and become `active` when data is PUT (or when Nova's
createImage makes them). Lists are newest first with Glance's `next` body link.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from tests.fakes.openstack.state import CloudState, iso, now_utc
from tests.fakes.openstack.web import ApiError, base_url, cloud, int_param, json_body, public

bp = Blueprint("glance", __name__, url_prefix="/image")

READ_ONLY = {
    "id", "status", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value",
    "owner", "created_at", "updated_at", "self", "file", "schema",
}  # fmt: skip
LIST_FILTERS = ("name", "status", "visibility", "disk_format", "container_format", "owner")


def glance_error(status: int, message: str) -> ApiError:
    titles = {
        400: "400 Bad Request",
        403: "403 Forbidden",
        404: "404 Not Found",
        409: "409 Conflict",
    }
    return ApiError(status, f"{titles.get(status, status)}\n\n{message}\n\n   ")


def _versions() -> Response:
    root = f"{base_url()}/image/v2/"
    docs = [
        {"id": f"v2.{minor}", "status": "CURRENT" if minor == 16 else "SUPPORTED"}
        for minor in (16, 15, 9, 0)
    ]
    for doc in docs:
        doc["links"] = [{"rel": "self", "href": root}]
    return jsonify({"versions": docs})


@bp.get("")
@public
def versions_root() -> tuple[Response, int]:
    return _versions(), 300


@bp.get("/versions")
@public
def versions() -> Response:
    return _versions()


def _image(state: CloudState, image_id: str) -> dict[str, Any]:
    image = state.images.get(image_id)
    if image is None:
        raise glance_error(404, f"No image found with ID {image_id}")
    return image


@bp.get("/v2/images")
def list_images() -> Response:
    state = cloud()
    with state.lock:
        images = [dict(image) for image in reversed(state.images.values())]
    for key in LIST_FILTERS:
        wanted = request.args.get(key)
        if wanted is not None:
            images = [i for i in images if str(i.get(key)) == wanted]
    marker = request.args.get("marker")
    if marker is not None:
        ids = [image["id"] for image in images]
        if marker not in ids:
            raise glance_error(400, f"marker {marker} could not be found.")
        images = images[ids.index(marker) + 1 :]
    limit = int_param("limit", lambda m: glance_error(400, m))
    limit = 25 if limit is None else min(limit, 1000)
    body: dict[str, Any] = {"images": images[:limit], "first": "/v2/images"}
    body["schema"] = "/v2/schemas/images"
    if len(images) > limit:
        body["next"] = f"/v2/images?marker={images[limit - 1]['id']}&limit={limit}"
    return jsonify(body)


@bp.post("/v2/images")
def create_image() -> tuple[Response, int]:
    body = json_body()
    forbidden = READ_ONLY.intersection(body) - {"id"}
    if forbidden:
        raise glance_error(403, f"Attribute '{sorted(forbidden)[0]}' is read-only.")
    known = {"name", "visibility", "disk_format", "container_format", "min_disk", "min_ram"}
    properties = {k: v for k, v in body.items() if k not in known | {"id", "tags", "protected"}}
    state = cloud()
    with state.lock:
        if body.get("id") in state.images:
            raise glance_error(409, f"Image with identifier {body['id']} already exists!")
        image = state.add_image(
            name=body.get("name") or "",
            properties=properties,
            disk_format=body.get("disk_format"),
            container_format=body.get("container_format"),
            visibility=body.get("visibility", "shared"),
            image_id=body.get("id"),
        )
        image.update(
            tags=list(body.get("tags") or []),
            protected=bool(body.get("protected", False)),
            min_disk=int(body.get("min_disk") or 0),
            min_ram=int(body.get("min_ram") or 0),
        )
        return jsonify(dict(image)), 201


@bp.get("/v2/images/<image_id>")
def get_image(image_id: str) -> Response:
    state = cloud()
    with state.lock:
        return jsonify(dict(_image(state, image_id)))


@bp.patch("/v2/images/<image_id>")
def update_image(image_id: str) -> Response:
    """JSON-patch (`application/openstack-images-v2.1-json-patch`): add/replace/remove."""
    ops = request.get_json(force=True, silent=True)
    if not isinstance(ops, list):
        raise glance_error(400, "The request body must be a JSON-patch list of operations.")
    state = cloud()
    with state.lock:
        image = _image(state, image_id)
        updated = dict(image)
        for op in ops:
            path = str(op.get("path", "")).lstrip("/") if isinstance(op, dict) else ""
            if not path or path in READ_ONLY:
                raise glance_error(403, f"Attribute '{path}' is read-only.")
            if op["op"] in ("add", "replace"):
                updated[path] = op.get("value")
            elif op["op"] == "remove":
                if path not in updated:
                    raise glance_error(409, f"Property {path} does not exist.")
                del updated[path]
            else:
                raise glance_error(400, f"Invalid operation: {op['op']}")
        updated["updated_at"] = iso(now_utc())
        image.clear()
        image.update(updated)
        return jsonify(dict(image))


@bp.delete("/v2/images/<image_id>")
def delete_image(image_id: str) -> tuple[str, int]:
    state = cloud()
    with state.lock:
        image = _image(state, image_id)
        if image.get("protected"):
            raise glance_error(403, f"Image {image_id} is protected and cannot be deleted.")
        del state.images[image_id]
        state.image_data.pop(image_id, None)
    return "", 204


@bp.put("/v2/images/<image_id>/file")
def upload_image(image_id: str) -> tuple[str, int]:
    state = cloud()
    data = request.get_data()
    with state.lock:
        image = _image(state, image_id)
        if image["status"] != "queued":
            raise glance_error(
                409, f"Image status transition from {image['status']} is not allowed"
            )
        state.store_image_data(image_id, data)
    return "", 204


@bp.get("/v2/images/<image_id>/file")
def download_image(image_id: str) -> Response | tuple[str, int]:
    state = cloud()
    with state.lock:
        image = _image(state, image_id)
        data = state.image_data.get(image_id)
    if data is None:
        return "", 204
    return Response(
        data,
        content_type="application/octet-stream",
        headers={"Content-MD5": image["checksum"]},
    )
