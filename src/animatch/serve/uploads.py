"""Untrusted request bodies: a cap on their size and the one way an uploaded image becomes a PIL image.

`BodySizeLimit` is a pure ASGI middleware: a request whose Content-Length is above the cap gets HTTP 413
before a byte of its body is read; one without a length (chunked) is counted as it streams and refused
as soon as it passes the cap, so a large upload never reaches the multipart parser's temp files.
`decode_upload` goes through `animatch.data.images.load_image_bytes`, so a decompression bomb is refused
from its header (HTTP 400) and a file that is not an image gets HTTP 415, each with a one-line message.
Decoded pixels are bounded twice before decoding: per image (`--max-decode-pixels`: a larger JPEG is
decoded downscaled, another format refused) and per request (`PixelBudget`, `--max-request-pixels`), so
a few small files of huge dimensions cannot take gigabytes.
"""

from __future__ import annotations

import json

from fastapi import HTTPException, UploadFile
from PIL import Image

from animatch.data.images import ImageLoadError, load_image_bytes

MIB = 1024 * 1024
DRAIN_MAX_BYTES = 64 * MIB


def too_large_message(limit: int) -> str:
    return f"upload too large: the limit is {limit / MIB:g} MiB per request (server option --max-upload-mb)"


class BodyTooLarge(HTTPException):
    """Raised from `receive` while a body streams past the cap; FastAPI passes HTTP exceptions through."""

    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=too_large_message(limit))


class BodySizeLimit:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            if length.isdigit() and int(length) <= DRAIN_MAX_BYTES:
                await _drain(receive)
            return await self._refuse(send)
        received, more_body, started = 0, True, False

        async def limited_receive():
            nonlocal received, more_body
            message = await receive()
            received += len(message.get("body", b""))
            more_body = message["type"] == "http.request" and message.get("more_body", False)
            if received > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge:
            if started:
                raise
            if more_body:
                await _drain(receive, received)
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": too_large_message(self.max_bytes)}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


async def _drain(receive, received: int = 0) -> None:
    """Read and drop the rest of a refused body (up to a bound): a client still sending it would otherwise
    see the connection reset instead of the 413 and its message."""
    while received <= DRAIN_MAX_BYTES:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        received += len(message.get("body", b""))


class PixelBudget:
    """The decoded pixels the images of one request may still take."""

    def __init__(self, total: int):
        self.total, self.left = total, total

    def charge(self, name: str, pixels: int) -> None:
        if pixels > self.left:
            raise HTTPException(400, detail=f"{name}: the images of this request decode to more than "
                                            f"{self.total} pixels (server option --max-request-pixels)")
        self.left -= pixels


def decode_upload(upload: UploadFile, max_pixels: int, decode_pixels: int, budget: PixelBudget) -> Image.Image:
    """The uploaded image as RGB, within the pixel caps; HTTPException 415 (not an image) or 400 (empty, bomb,
    too many pixels, over the request's budget, broken) otherwise."""
    name = upload.filename or "upload"
    data = upload.file.read()
    try:
        return load_image_bytes(data, name, max_pixels=max_pixels, decode_pixels=decode_pixels,
                                charge=lambda pixels: budget.charge(name, pixels))
    except ImageLoadError as e:
        status = 415 if e.reason.startswith("not an image") else 400
        raise HTTPException(status, detail=f"{name}: {e.reason}") from None
