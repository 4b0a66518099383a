"""Who may do what on the service: the write token, the JSON-only body rule, the body size cap.

- Reads (``POST /recommend``, ``GET /health``, the docs) are open to whoever reaches the port
  (loopback by default). Writes (``POST /items``) are off unless the server was started with
  ``--allow-writes`` and a token (``GENREC_TOKEN`` or ``--token-file``); a write then needs
  ``Authorization: Bearer <token>``, compared in constant time.
- ``JsonBodyGuard`` (ASGI middleware) refuses a POST / PUT / PATCH whose ``Content-Type`` is not
  JSON with 415 before any endpoint runs. FastAPI's own handling differs between versions (some
  parse a body without a content type as JSON); a browser's cross-site form post
  (``text/plain``, ``application/x-www-form-urlencoded``, ``multipart/form-data``) needs no CORS
  pre-flight, so this check is what keeps such a post out whatever FastAPI version is installed.
  It also reads the body up to ``max_body_bytes`` and answers 413 beyond (``Content-Length`` is
  checked first; a chunked body is counted as it arrives).
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path

from genrec_core.errors import GenrecError

TOKEN_ENV = "GENREC_TOKEN"
MIN_TOKEN_CHARS = 16
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def read_token(token_file: Path | None) -> str | None:
    """The write token: the file's content (stripped) when given, else ``$GENREC_TOKEN``, else None."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise GenrecError(f"--token-file {token_file}: cannot read it ({exc})") from None
        source = f"--token-file {token_file}"
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        source = TOKEN_ENV
        if not token:
            return None
    if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or any(c.isspace() for c in token):
        raise GenrecError(
            f"{source}: the token must be at least {MIN_TOKEN_CHARS} printable characters without spaces (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`)"
        )
    return token


def token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (constant-time compare)."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8"))


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JsonBodyGuard:
    """ASGI middleware: JSON bodies only (415), at most ``max_body_bytes`` (413); see the module docstring."""

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = int(max_body_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not is_json(headers.get("content-type")):
            got = headers.get("content-type") or "none"
            return await _refuse(send, 415, f"the body must be JSON: Content-Type application/json, got {got[:60]!r}", "content-type")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return await _refuse(send, 413, _too_large(int(length), self.max_body_bytes), "body")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client went before sending its body: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await _refuse(send, 413, _too_large(None, self.max_body_bytes), "body")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # afterwards: the disconnect, when it comes

        return await self.app(scope, replay, send)


def _too_large(size: int | None, limit: int) -> str:
    from genrec_core.serving.limits import ServeLimits

    return ServeLimits(max_body_bytes=limit).body_too_large(size).message


async def _refuse(send, status: int, message: str, field: str) -> None:
    body = json.dumps({"error": f"{field}: {message}", "field": field}).encode("utf-8")
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    )
    await send({"type": "http.response.body", "body": body})
