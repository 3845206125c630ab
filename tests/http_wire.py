"""HTTP/1.1 over one socket, for tests that must see the connection itself: whether the
server keeps it for the next request, closes it, or answers before the body is sent."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

from tests.support import bearer

PROBLEM = "application/problem+json"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def problem(self, status: int) -> dict[str, Any]:
        """The body, checked to be a problem details document with that status."""
        assert self.status == status, (self.status, self.body[:500])
        assert self.headers.get("content-type", "").startswith(PROBLEM), self.headers
        problem: dict[str, Any] = self.json()
        assert problem["status"] == status and problem["title"], problem
        return problem


class Wire:
    """One keep-alive connection to an API (``http://127.0.0.1:PORT``); every request
    carries an `ops` token unless its headers give another `Authorization`."""

    def __init__(self, url: str, timeout: float = 15.0) -> None:
        self.authorization = bearer()["Authorization"]
        parts = urlsplit(url)
        self.host = f"{parts.hostname}:{parts.port}"
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        self._buffer = b""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def head(self, method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        headers = {"Authorization": self.authorization, **(headers or {})}
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str | None = "application/json",
    ) -> Answer:
        all_headers = dict(headers or {})
        if body or method in ("POST", "PUT", "PATCH"):
            all_headers["Content-Length"] = str(len(body))
            if content_type is not None:
                all_headers["Content-Type"] = content_type
        self.sock.sendall(self.head(method, path, all_headers) + body)
        return self.answer()

    def post_json(self, path: str, document: Any, headers: dict[str, str] | None = None) -> Answer:
        return self.request("POST", path, json.dumps(document).encode(), headers)

    def send_until_answered(self, parts: Iterable[bytes]) -> None:
        """Send ``parts`` one after another, stopping early once the server has answered:
        it may refuse a request before its end and close the connection, and sending on
        would meet its reset (which can drop the answer before it is read)."""
        for part in parts:
            if select.select([self.sock], [], [], 0)[0]:
                return
            try:
                self.sock.sendall(part)
            except (ConnectionResetError, BrokenPipeError):
                return

    def answer(self) -> Answer:
        """Read one response (with a Content-Length body, as every API answer has)."""
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self._buffer) < length:
            self._fill()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return Answer(int(status_line.split()[1]), headers, body)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self._buffer += chunk

    def closed_by_server(self, within: float) -> bool:
        """True once the server has closed the connection, waiting at most ``within`` s
        (bytes it still sends are read and dropped)."""
        deadline = time.monotonic() + within
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                if not self.sock.recv(65536):
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            except TimeoutError:
                return False
        return False
