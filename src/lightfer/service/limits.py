"""ASGI middleware refusing request bodies over a per-path byte limit with 413, before they are read."""
from __future__ import annotations

import json
from typing import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lightfer.service.engine import ServiceError


class BodyTooLarge(ServiceError):
    """Raised from ``receive`` once a streamed body passes its limit (answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large (more bytes than allowed); the limit here is {limit} bytes")


class BodySizeLimit:
    """413 for bodies larger than ``limit_for(path)`` bytes (None = no limit).

    A ``Content-Length`` over the limit is refused without reading the body; a chunked body is
    counted as it arrives and refused once it passes the limit.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int | None]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        if limit is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_413(send, limit, int(declared))
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _send_413(send, limit, None)


async def _send_413(send: Send, limit: int, declared: int | None) -> None:
    size = f"{declared} bytes" if declared is not None else "more bytes than allowed"
    body = json.dumps({"detail": f"request body too large ({size}); the limit here is {limit} bytes"}).encode()
    await send({
        "type": "http.response.start",
        "status": 413,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})
