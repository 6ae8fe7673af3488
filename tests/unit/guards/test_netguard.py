"""URL guard: refusals never connect anywhere; fetches only ever go to a server on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from sdcore.errors import InvalidInputError
from sdcore.guards import netguard

BODY = b"\x89PNG" + b"x" * 996  # 1000 bytes


class _Handler(BaseHTTPRequestHandler):
    server: LocalServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.seen.append({"path": self.path, "headers": dict(self.headers)})
        parts = unquote(self.path).strip("/").split("/")
        match parts:
            case ["img"]:
                self._send(200, BODY)
            case ["host"]:
                self._send(200, self.headers["Host"].encode())
            case ["status", code]:
                self._send(int(code), b"nope")
            case ["redirect", *target]:
                self._send(302, headers={"Location": "/".join(target).replace(":/", "://")})
            case ["chain", n]:
                location = "/img" if int(n) == 1 else f"/chain/{int(n) - 1}"
                self._send(301, headers={"Location": location})
            case ["big"]:
                self._send(200, b"y" * 5000)
            case ["big-lying"]:  # no Content-Length: the body ends when the connection closes
                self.close_connection = True
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"y" * 5000)
            case ["slow"]:
                time.sleep(1.5)
                self._send(200, BODY)
            case ["dribble"]:
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                for _ in range(20):
                    self.wfile.write(b"z")
                    self.wfile.flush()
                    time.sleep(0.1)
            case _:
                self._send(404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.server.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        parts = self.path.strip("/").split("/")
        match parts:
            case ["hook", code]:
                self._send(int(code), b"{}")
            case ["slow"]:
                time.sleep(1.5)
                self._send(200)
            case _:
                self._send(204)


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[dict[str, Any]] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def server() -> Iterator[LocalServer]:
    srv = LocalServer()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, list[str]]], list[str]]:
    """Replace DNS with a table; returns a function that installs it and records lookups."""
    lookups: list[str] = []

    def install(table: dict[str, list[str]]) -> list[str]:
        def fake(host: str, port: int) -> list[str]:
            try:
                return [str(ipaddress.ip_address(host))]  # literals need no DNS
            except ValueError:
                pass
            lookups.append(host)
            if host in table:
                return table[host]
            raise socket.gaierror(socket.EAI_NONAME, "unknown host")

        monkeypatch.setattr(netguard, "_resolve", fake)
        return lookups

    return install


def fetch(url: str, *, allow_private: bool = True, max_bytes: int = 10_000, timeout_s=2.0):
    return netguard.fetch_url(
        url, allow_private=allow_private, max_bytes=max_bytes, timeout_s=timeout_s, field="image"
    )


def refusal(call: Callable[[], Any]) -> str:
    with pytest.raises(InvalidInputError) as err:
        call()
    assert err.value.field == "image"
    return err.value.message


# --- refusals before any connection ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://127.0.0.1/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("gopher://127.0.0.1/", "http or https"),
        ("http:///x", "no host"),
        ("http://user:pw@127.0.0.1/x", "credentials"),
        ("http://@127.0.0.1/x", "credentials"),
        ("http://127.0.0.1/x", "loopback"),
        ("http://127.8.9.1/x", "loopback"),
        ("http://10.0.0.1/x", "private"),
        ("http://192.168.1.20/x", "private"),
        ("http://172.16.5.4/x", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]/x", "loopback"),
        ("http://[::ffff:10.0.0.1]/x", "private"),
        ("http://[::ffff:127.0.0.1]/x", "loopback"),
        ("http://[fe80::1]/x", "link-local"),
        ("http://[fc00::1]/x", "private"),
        ("http://0.0.0.0/x", "unspecified"),
        ("http://224.0.0.1/x", "multicast"),
        ("http://240.0.0.1/x", "reserved"),
        ("http://100.64.0.1/x", "non-public"),
        ("http://localhost/x", "loopback"),
    ],
)
def test_check_url_refuses(url: str, reason: str) -> None:
    message = refusal(lambda: netguard.check_url(url, False, field="image"))
    assert reason in message


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/", "http://0.0.0.0/", "http://[fe80::1]/"]
)
def test_allow_private_still_refuses_link_local_and_unspecified(url: str) -> None:
    refusal(lambda: netguard.check_url(url, True, field="image"))


def test_every_resolved_address_is_checked(resolver) -> None:
    resolver({"mixed.test": ["93.184.216.34", "10.1.2.3"], "public.test": ["93.184.216.34"]})
    assert "private" in refusal(
        lambda: netguard.check_url("https://mixed.test/a", False, field="image")
    )
    netguard.check_url("https://public.test/a", False)  # no connection is made by check_url


def test_unresolvable_host_is_refused(resolver) -> None:
    resolver({})
    assert "resolved" in refusal(
        lambda: netguard.check_url("http://nowhere.test/", False, field="image")
    )


def test_fetch_refuses_before_connecting(server: LocalServer) -> None:
    refusal(lambda: fetch(server.url("/img"), allow_private=False))
    refusal(lambda: fetch(server.url("/img", host="localhost"), allow_private=False))
    assert server.seen == []


# --- fetching from 127.0.0.1 (allow_private=True) ----------------------------------------------


def test_fetch_ok(server: LocalServer) -> None:
    assert fetch(server.url("/img")) == BODY
    assert server.seen[0]["headers"]["Accept-Encoding"] == "identity"


def test_connects_to_the_checked_address_with_the_original_host(server, resolver) -> None:
    # Given a name whose second lookup would answer differently (DNS rebinding)
    lookups = resolver({"images.test": ["127.0.0.1"]})
    # When it is fetched
    body = fetch(server.url("/host", host="images.test"))
    # Then it was resolved once, and the server saw the name, not the IP, as Host
    assert lookups == ["images.test"]
    assert body == f"images.test:{server.port}".encode()


def test_https_request_pins_ip_and_keeps_name_for_sni() -> None:
    target = netguard.PinnedTarget(url=httpx.URL("https://images.test/a.png?x=1"), ip="::1")
    assert str(target.request_url()) == "https://[::1]/a.png?x=1"
    assert target.headers() == {"Host": "images.test"}
    assert target.extensions() == {"sni_hostname": "images.test"}
    plain = netguard.PinnedTarget(url=httpx.URL("http://images.test:81/"), ip="127.0.0.1")
    assert plain.extensions() == {} and plain.headers() == {"Host": "images.test:81"}


def test_redirects_followed_up_to_three(server: LocalServer) -> None:
    assert fetch(server.url("/chain/3")) == BODY
    assert "too many" in refusal(lambda: fetch(server.url("/chain/4")))


def test_redirect_to_link_local_refused_even_when_private_allowed(server: LocalServer) -> None:
    url = server.url("/redirect/http:/169.254.169.254/latest/meta-data")
    assert "link-local" in refusal(lambda: fetch(url))


@pytest.mark.parametrize("target", ["http:/10.0.0.1/x", "http:/[::1]/x", "http:/127.0.0.1/x"])
def test_redirect_to_private_refused(server, resolver, monkeypatch, target: str) -> None:
    # Given a "public" name that lands on the test server (127.0.0.1 treated as public here only)
    lookups = resolver({"public.test": ["127.0.0.1"]})
    real = netguard.address_refusal
    first = {"done": False}

    def refuse(address: str, allow_private: bool) -> str | None:
        if address == "127.0.0.1" and not first["done"]:
            first["done"] = True
            return None
        return real(address, allow_private)

    monkeypatch.setattr(netguard, "address_refusal", refuse)
    # When it redirects to a private address, Then the second hop is refused
    message = refusal(
        lambda: fetch(server.url(f"/redirect/{target}", "public.test"), allow_private=False)
    )
    assert "private" in message or "loopback" in message
    assert lookups == ["public.test"] and len(server.seen) == 1


def test_non_2xx_refused(server: LocalServer) -> None:
    assert "HTTP 404" in refusal(lambda: fetch(server.url("/status/404")))
    assert "HTTP 500" in refusal(lambda: fetch(server.url("/status/500")))
    assert "HTTP 302" in refusal(lambda: fetch(server.url("/status/302")))  # no Location


def test_size_limit(server: LocalServer) -> None:
    assert fetch(server.url("/big"), max_bytes=5000) == b"y" * 5000
    assert "larger" in refusal(lambda: fetch(server.url("/big"), max_bytes=4999))
    assert "larger" in refusal(lambda: fetch(server.url("/big-lying"), max_bytes=4999))


def test_timeouts(server: LocalServer) -> None:
    assert "timed out" in refusal(lambda: fetch(server.url("/slow"), timeout_s=0.3))
    # each read is quick but the whole body is not: the overall deadline stops it
    assert "timed out" in refusal(lambda: fetch(server.url("/dribble"), timeout_s=0.5))


def test_connection_refused() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    message = refusal(lambda: fetch(f"http://127.0.0.1:{port}/img", timeout_s=1))
    assert "could not be fetched" in message
