"""A Jupyter-style web service on the standard library: files of a workspace behind a token.

GET /api/status answers without a token (for probes); everything else needs the token, given
once as ?token=… (then kept in a cookie), or in an "Authorization: token …" header.
"""

import hmac
import http.cookies
import json
import os
import secrets
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ROOT = os.path.abspath(os.environ.get("NOTEBOOK_ROOT", "data/workspace"))
TOKEN = os.environ.get("NOTEBOOK_TOKEN") or secrets.token_hex(24)
STARTED = time.time()


class Handler(SimpleHTTPRequestHandler):
    server_version = "dream-notebook/1"

    def authorized(self) -> bool:
        query = parse_qs(urlsplit(self.path).query).get("token", [""])[0]
        header = self.headers.get("Authorization", "")
        cookie = http.cookies.SimpleCookie(self.headers.get("Cookie", ""))
        given = [query, header.removeprefix("token ").strip(), cookie["notebook-token"].value
                 if "notebook-token" in cookie else ""]
        return any(value and hmac.compare_digest(value, TOKEN) for value in given)

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/api/status":
            body = json.dumps({"started": STARTED, "root": ROOT}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if not self.authorized():
            self.send_error(403, "a token is needed: ?token=...")
            return
        super().do_GET()

    def end_headers(self) -> None:
        if "token=" in self.path:
            self.send_header("Set-Cookie", f"notebook-token={TOKEN}; HttpOnly; SameSite=Strict; Path=/")
        super().end_headers()


def main() -> None:
    port = int(os.environ.get("PORT", "8888"))
    bind = os.environ.get("NOTEBOOK_BIND", "127.0.0.1")
    os.makedirs(ROOT, exist_ok=True)
    server = ThreadingHTTPServer((bind, port), partial(Handler, directory=ROOT))
    print(f"serving {ROOT} at http://{bind}:{port}/?token={TOKEN}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
