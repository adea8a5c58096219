"""The standard library's ``http.server`` as an HTTP/1.0 event-stream origin, run as a script:
``python interop_http10.py HOST PORT``.

Every response is HTTP/1.0 with ``Content-Type: text/event-stream`` and neither ``Content-Length``,
``Transfer-Encoding`` nor ``Connection``: the body ends when the server closes the socket.
Routes as interop_app's: ``GET /events?n=N``, ``GET /big``, ``POST /v1/chat/completions``.
"""

from __future__ import annotations

import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from interop_content import SMALL_COUNT, big_body, is_chat_request, small_body, tokens_body

#: The most bytes written per send, so a body reaches the client in many TCP segments.
WRITE_SIZE = 16 * 1024


class Handler(BaseHTTPRequestHandler):
    """Writes the whole stream for each request, then closes (HTTP/1.0 never keeps it alive)."""

    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        """GET /events?n=N and /big."""
        url = urlsplit(self.path)
        if url.path == "/events":
            count = int(parse_qs(url.query).get("n", [str(SMALL_COUNT)])[0])
            self._stream(small_body(count))
        elif url.path == "/big":
            self._stream(big_body())
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        """POST /v1/chat/completions (the body must be CHAT_REQUEST)."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if urlsplit(self.path).path != "/v1/chat/completions":
            self.send_error(404)
        elif not is_chat_request(body):
            self.send_error(400, "the request body is not the expected JSON")
        else:
            self._stream(tokens_body())

    def _stream(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        view = memoryview(body)
        for start in range(0, len(view), WRITE_SIZE):
            self.wfile.write(view[start : start + WRITE_SIZE])
            self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        """No access log on stderr."""


class Server(ThreadingHTTPServer):
    """A threading server that can listen on IPv6 too."""

    daemon_threads = True


def main() -> None:
    """Serve on ``argv[1]`` (an IPv4 or IPv6 address), port ``argv[2]``, until terminated."""
    host, port = sys.argv[1], int(sys.argv[2])
    Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with Server((host, port), Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
