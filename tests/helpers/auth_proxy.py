"""A tracking server behind HTTP authentication, for tests: a small reverse proxy on 127.0.0.1 in
front of a real ``mlflow server`` that answers 401 without valid credentials and 403 for a user
without access, the way a server behind basic auth or MLflow's ``basic-auth`` app does (that app
needs Flask-WTF, which this environment lacks).

Accepted: basic auth :data:`USER` / :data:`PASSWORD`, or the bearer token :data:`TOKEN`.
:data:`READER` with :data:`PASSWORD` is known but forbidden (403); anything else is 401.
"""
from __future__ import annotations

import base64
import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

USER, READER, PASSWORD, TOKEN = "igan-user", "igan-reader", "s3cret-pw-4711", "tok-s3cret-0815"
#: Hop-by-hop headers (and the ones the proxy sets itself) that are not forwarded.
_SKIP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "authorization",
         "proxy-connection", "te", "trailer", "upgrade"}


def _status_for(authorization: str | None) -> int:
    """200 for accepted credentials, 403 for the known user without access, else 401."""
    basic = lambda user: "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()  # noqa: E731
    if authorization in (basic(USER), f"Bearer {TOKEN}"):
        return 200
    return 403 if authorization == basic(READER) else 401


class _Handler(BaseHTTPRequestHandler):
    upstream: tuple[str, int]  # set on the subclass made by AuthProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)[:size]  # the chunk and its CRLF
                if size == 0:
                    return out
                out += chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        body = self._body()
        status = _status_for(self.headers.get("Authorization"))
        if status != 200:
            text = b"Unauthorized" if status == 401 else b"Forbidden"
            self._answer(status, [("WWW-Authenticate", 'Basic realm="mlflow"'), ("Content-Type", "text/plain")], text)
            return
        conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _SKIP}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self._answer(resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in _SKIP], data)
        finally:
            conn.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class AuthProxy:
    """The proxy in front of ``upstream`` (``http://127.0.0.1:PORT``), serving in a daemon thread;
    ``url`` is its address (no credentials). :meth:`close` stops it."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        handler = type("Handler", (_Handler,), {"upstream": (parts.hostname, parts.port)})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="auth-proxy", daemon=True)
        self.thread.start()

    def with_credentials(self, user: str = USER, password: str = PASSWORD) -> str:
        """``http://user:password@127.0.0.1:PORT``."""
        return self.url.replace("http://", f"http://{user}:{password}@", 1)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
