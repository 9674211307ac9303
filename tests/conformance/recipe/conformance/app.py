"""The conformance deployment's app (standard library only, run from the service's config
directory): it notes its start in data/record/events, counts its starts in the persistent volume
data/app, looks into the wiped volume data/scratch and leaves a file there, and serves on
127.0.0.1:$APP_PORT, as JSON, what it saw. A SIGTERM is noted and ends it cleanly."""

import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def event(what: str) -> None:
    with open("data/record/events", "a") as record:
        record.write(f"{what} {time.time():.6f}\n")


event("app-start")
try:
    with open("data/app/starts") as counter:
        starts = int(counter.read()) + 1
except FileNotFoundError:
    starts = 1
with open("data/app/starts.tmp", "w") as counter:
    counter.write(f"{starts}\n")
os.replace("data/app/starts.tmp", "data/app/starts")
scratch_before = sorted(os.listdir("data/scratch"))
with open(f"data/scratch/left-by-start-{starts}", "w") as left:
    left.write("a wiped volume must not keep this\n")
with open(os.path.join(os.environ["DREAM_CONFIG_DIR"], "greeting.txt")) as config:
    greeting = config.read()
health_hits = 0


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        global health_hits
        if self.path == "/health":
            health_hits += 1
            body = b"ok\n"
        else:
            body = json.dumps({
                "starts": starts, "scratch_before": scratch_before, "config": greeting,
                "deployment_env": os.environ.get("CONF_DEPLOYMENT_VALUE"),
                "service_env": os.environ.get("CONF_SERVICE_VALUE"),
                "port_env": os.environ.get("PORT"), "health_hits": health_hits,
            }).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the liveness probe asks five times a second


def stop(number: int, frame: object) -> None:
    event("app-sigterm")
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
server = HTTPServer(("127.0.0.1", int(os.environ["APP_PORT"])), Handler)
print(f"app start {starts} listening on 127.0.0.1:{os.environ['APP_PORT']}")
server.serve_forever()
