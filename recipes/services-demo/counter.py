"""The demo app: it needs Redis from its first line (no retry loop), so it only works when the
supervisor starts it after Redis is healthy. It counts its starts and its HTTP hits in Redis."""

import os
import socket
from http.server import BaseHTTPRequestHandler, HTTPServer


def redis(*args: str) -> bytes:
    """One command over RESP, the reply's first line."""
    with socket.create_connection(("127.0.0.1", int(os.environ["REDIS_PORT"])), timeout=2) as conn:
        conn.sendall(f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args))
        return conn.recv(4096).split(b"\r\n")[0]


class Hits(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hits: {int(redis('INCR', 'hits')[1:])}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


print(f"redis says {redis('PING')[1:].decode()}; start number {int(redis('INCR', 'starts')[1:])}", flush=True)
server = HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Hits)
print(f"counting hits on port {server.server_port}", flush=True)
server.serve_forever()
