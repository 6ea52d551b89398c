"""HTTP document API: read, write and delete documents without a WebSocket.

    GET    /docs/<name>                 the whole state as one Yjs v1 update
                                        (application/octet-stream)
    GET    /docs/<name>?format=json     the root types as JSON
    POST   /docs/<name>                 apply the Yjs v1 update in the body; the
                                        connected clients receive it like any
                                        other edit
    DELETE /docs/<name>                 remove the document from memory,
                                        storage and the mesh log; its clients
                                        are closed with 4410
    GET    /versions/<name>             the kept versions: [{id, created_at, bytes}]
    GET    /versions/<name>?id=N        one version's state (``&format=json`` too)
    POST   /versions/<name>?id=N        restore it: the document is edited
                                        forward to that content, and
                                        connected clients receive the edit

Every request needs a token when the relay checks tokens, sent as
``Authorization: Bearer <token>`` or ``?token=<token>``. Reading needs the
viewer role, POST to /docs the editor role, and DELETE or a restore the admin
role.

Errors are JSON objects ``{"error": "..."}``. The statuses:
- 400 for an invalid name or update;
- 401 for a missing or invalid token, 403 for a role too low for the request;
- 404 for a document with no content;
- 413 for a body above ``--max-message-size``;
- 503 when storage cannot be read or the issuer's keys cannot be fetched.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from auth import AuthError, Role
from persistence import StoreUnavailable
from sync.errors import CloseCode, InvalidUpdate
from sync.export import document_to_python

from .access import AccessPolicy, token_from_scope
from .names import InvalidDocumentName, document_name_from_path
from .rooms import RoomManager

LOGGER = logging.getLogger("yrelay.api")


_DOCUMENT_ROLES = {"GET": Role.VIEWER, "HEAD": Role.VIEWER, "POST": Role.EDITOR, "DELETE": Role.ADMIN}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class DocumentApi:
    """Starlette routes of the document API over one relay's rooms."""

    def __init__(self, rooms: RoomManager, max_body_bytes: int, access: AccessPolicy | None = None) -> None:
        self.rooms = rooms
        self.max_body_bytes = max_body_bytes
        self.access = access or AccessPolicy(None)

    def routes(self) -> list[Route]:
        """The routes to mount in the relay's HTTP app."""
        return [
            Route("/docs/{name:path}", self._document, methods=["GET", "POST", "DELETE"]),
            Route("/versions/{name:path}", self._versions, methods=["GET", "POST"]),
        ]

    async def _authorize(self, request: Request, name: str, needed: Role) -> Response | None:
        """Return an error response when the request's token does not grant ``needed`` on ``name``."""
        try:
            await self.access.grant(token_from_scope(request.scope), name, needed)
        except AuthError as exc:
            self.rooms.metrics.auth_failures.labels(status=str(exc.status)).inc()
            LOGGER.info("rejected request doc=%s method=%s status=%d: %s",
                        name, request.method, exc.status, exc.message)
            response = _error(exc.status, exc.message)
            if exc.status == 401:
                response.headers["www-authenticate"] = 'Bearer error="invalid_token"'
            return response
        return None

    async def _versions(self, request: Request) -> Response:
        try:
            name = document_name_from_path(request.path_params["name"])
        except InvalidDocumentName as exc:
            return _error(400, str(exc))
        raw_id = request.query_params.get("id")
        refused = await self._authorize(request, name, Role.ADMIN if request.method == "POST" else Role.VIEWER)
        if refused is not None:
            return refused
        try:
            if raw_id is None:
                if request.method == "POST":
                    return _error(400, "restoring needs ?id=<version id>")
                versions = await self.rooms.store.list_versions(name)
                return JSONResponse(
                    [{"id": v.version_id, "created_at": v.created_at, "bytes": v.size} for v in versions]
                )
            if not raw_id.isdigit():
                return _error(400, f"invalid version id {raw_id!r}: expected a number")
            state = await self.rooms.store.load_version(name, int(raw_id))
            if state is None:
                return _error(404, f"version {raw_id} of document {name!r} not found")
            if request.method == "POST":
                async with self.rooms.borrow(name) as room:
                    room.restore(state)
                    await room.flush()
                LOGGER.info("restored doc=%s version=%s", name, raw_id)
                return Response(status_code=204)
            if request.query_params.get("format", "update") == "json":
                return JSONResponse(document_to_python(state))
            return Response(state, media_type="application/octet-stream")
        except StoreUnavailable as exc:
            LOGGER.warning("storage unavailable doc=%s method=%s: %s", name, request.method, exc)
            return _error(503, "storage unavailable, try again later")

    async def _document(self, request: Request) -> Response:
        try:
            name = document_name_from_path(request.path_params["name"])
        except InvalidDocumentName as exc:
            return _error(400, str(exc))
        # Starlette routes HEAD to every GET route, so HEAD arrives here too
        # and must read like GET. Only an explicit DELETE deletes.
        needed = _DOCUMENT_ROLES.get(request.method)
        if needed is None:
            return _error(405, f"method {request.method} is not allowed")
        refused = await self._authorize(request, name, needed)
        if refused is not None:
            return refused
        try:
            if request.method in ("GET", "HEAD"):
                return await self._read(name, request.query_params.get("format", "update"))
            if request.method == "POST":
                return await self._write(name, request)
            return await self._delete(name)
        except StoreUnavailable as exc:
            LOGGER.warning("storage unavailable doc=%s method=%s: %s", name, request.method, exc)
            return _error(503, "storage unavailable, try again later")

    async def _read(self, name: str, output_format: str) -> Response:
        if output_format not in ("update", "json"):
            return _error(400, f"unknown format {output_format!r}: use 'update' or 'json'")
        async with self.rooms.borrow(name) as room:
            if not room.exists:
                return _error(404, f"document {name!r} not found")
            state = room.session.encode_state()
        if output_format == "json":
            return JSONResponse(document_to_python(state))
        return Response(state, media_type="application/octet-stream")

    async def _write(self, name: str, request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > self.max_body_bytes:
                return _error(413, f"update is larger than {self.max_body_bytes} bytes")
        async with self.rooms.borrow(name) as room:
            try:
                room.apply_from_api(bytes(body))
            except InvalidUpdate:
                LOGGER.info("rejected update doc=%s source=http bytes=%d", name, len(body))
                return _error(400, "body is not a valid Yjs v1 update")
            await room.flush()
        return Response(status_code=204)

    async def _delete(self, name: str) -> Response:
        async with self.rooms.borrow(name) as room:
            found = room.exists
        if not found:
            return _error(404, f"document {name!r} not found")
        await self.rooms.delete(name, CloseCode.DOCUMENT_DELETED, "document deleted")
        return Response(status_code=204)
