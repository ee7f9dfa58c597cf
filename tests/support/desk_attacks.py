"""Raw HTTP against a desk, for tests/stack/test_review_attacks.py and bench/desk_attack_bench.py.

The attacks need control that an HTTP client library does not give: a burst of logins whose
requests are all on the wire, in a chosen order, before the first answer is read; a body that is
sent only while the desk has not answered yet (so what the desk let in can be counted); chunked
bodies with no length.  And the desk process's peak memory, reset before each attack.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx

MB = 1024 * 1024
PIECE = 64 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int = 0  # body bytes the desk took before its answer came


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def head(url: str, method: str, path: str, headers: dict[str, str]) -> bytes:
    """A request line and headers; every request asks the desk to close the connection after
    its answer, so an answer ends where the stream does."""
    host, port = address(url)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse(raw: bytes) -> Answer:
    """An answer's status, headers and body; status 0 when none came."""
    if not raw.startswith(b"HTTP/"):
        return Answer(0, {}, raw)
    top, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


def read_all(sock: socket.socket) -> bytes:
    out = b""
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while piece := sock.recv(65536):
            out += piece
    return out


def answered(sock: socket.socket) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        return bool(sel.select(0))


def send(url: str, request_head: bytes, body: Iterable[bytes] = (), timeout: float = 120) -> Answer:
    """One request; its body sent piece by piece only while no answer has come."""
    sent = 0
    with socket.create_connection(address(url), timeout=timeout) as sock:
        sock.sendall(request_head)
        for piece in body:
            if answered(sock):
                break
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        raw = read_all(sock)
    answer = parse(raw)
    return Answer(answer.status, answer.headers, answer.body, sent)


def filler(total: int, first: bytes = b"", last: bytes = b"") -> Iterator[bytes]:
    """``total`` bytes of body: ``first``, then ``a``s, then ``last``, in 64 KiB pieces."""
    yield first
    left = total - len(first) - len(last)
    while left > 0:
        yield b"a" * min(PIECE, left)
        left -= PIECE
    yield last


def chunked(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The same pieces in chunked transfer coding (no length declared)."""
    for piece in pieces:
        if piece:
            yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


def login_csrf(url: str) -> tuple[str, str]:
    """A login page's CSRF token and its cookie (``name=value``)."""
    page = httpx.get(f"{url}/login", timeout=30)
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token, page.text[:300]
    return token.group(1), f"vitrine_login_csrf={page.cookies['vitrine_login_csrf']}"


def login_request(url: str, csrf: tuple[str, str], user: str, password: str, client: str) -> bytes:
    """A complete ``POST /login``; ``client`` is the address the desk's trusted proxy vouches
    for (X-Forwarded-For, believed from loopback in the test desks)."""
    body = urlencode({"csrf": csrf[0], "username": user, "password": password}).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Length": str(len(body)),
        "Cookie": csrf[1],
        "X-Forwarded-For": client,
    }
    return head(url, "POST", "/login", headers) + body


def burst(
    url: str,
    requests: list[bytes],
    done: Callable[[int, Answer], None] | None = None,
    sent: Callable[[], None] | None = None,
) -> list[Answer]:
    """Every request on its own connection, all of them sent (in order) before any answer is
    read; ``sent()`` once they all are, ``done(i, answer)`` as each answer completes."""
    socks = [socket.create_connection(address(url), timeout=120) for _ in requests]
    raw = [b""] * len(requests)
    answers: list[Answer | None] = [None] * len(requests)
    try:
        for sock, request in zip(socks, requests, strict=True):
            sock.sendall(request)
        if sent is not None:
            sent()
        with selectors.DefaultSelector() as sel:
            for i, sock in enumerate(socks):
                sel.register(sock, selectors.EVENT_READ, i)
            while sel.get_map():
                for key, _ in sel.select(120) or _timed_out():
                    i = key.data
                    piece = b""
                    with contextlib.suppress(ConnectionResetError):
                        piece = socks[i].recv(65536)
                    raw[i] += piece
                    if not piece:
                        sel.unregister(socks[i])
                        answers[i] = parse(raw[i])
                        if done is not None:
                            done(i, answers[i])
    finally:
        for sock in socks:
            sock.close()
    return [a for a in answers if a is not None]


def _timed_out() -> list[tuple[selectors.SelectorKey, int]]:
    raise TimeoutError("the desk did not answer the burst within 120 s")


def status_line(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` field, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def reset_peak(pid: int) -> int:
    """Reset the process's peak resident memory (VmHWM) to what it holds now; that, in kB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status_line(pid, "VmHWM")


def peak_growth_mb(pid: int, start_kb: int) -> float:
    return (status_line(pid, "VmHWM") - start_kb) / 1024
