"""A stand-in upstream for the gateway tests: it records every request it sees.

`python tests/gateway_upstream.py PORT LOG` serves on 127.0.0.1:PORT and appends one
JSON line per request (method, path, headers, body size) to LOG, so a test can tell
what reached the upstream and what the gateway refused on its own.

- `/fail-once/<key>`: 502 the first time a (method, path) is asked, 200 after;
- `/slow`: 200 after a second (to hold a request open);
- `/broken`: always 500;
- `/health/ready`: 503 when started with a third argument `unready`, else 200;
- anything else: 200 with the request's headers as JSON.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOCK = threading.Lock()
SEEN: set[tuple[str, str]] = set()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log_path: Path
    unready = False

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        record = {
            "method": self.command,
            "path": self.path,
            "headers": {name.lower(): value for name, value in self.headers.items()},
            "body_bytes": len(body),
        }
        with LOCK:
            with self.log_path.open("a") as log:
                log.write(json.dumps(record) + "\n")
            first = (self.command, self.path) not in SEEN
            SEEN.add((self.command, self.path))
        status = 502 if self.path.startswith("/fail-once/") and first else 200
        if self.path == "/broken" or (self.path == "/health/ready" and Handler.unready):
            status = 500 if self.path == "/broken" else 503
        if self.path == "/slow":
            time.sleep(1)
        answer = json.dumps(record).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    port, log = int(sys.argv[1]), Path(sys.argv[2])
    Handler.log_path = log
    Handler.unready = sys.argv[3:4] == ["unready"]
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
