"""Fetch user-supplied http(s) URLs without letting them reach inside the network (SSRF guard).

Every hop is checked the same way: http or https only, a host, no credentials, and every address
the host resolves to must be public (unless `allow_private`, which the local tests use). The
connection then goes to the very address that was checked, so a DNS answer that changes between
the check and the connect (rebinding) cannot redirect it: the request URL carries the IP, the
`Host` header carries the name, and for https the `sni_hostname` request extension makes httpcore
send the name as SNI and verify the certificate against the name, not the IP.

Redirects are followed by hand (at most `MAX_REDIRECTS`), each target re-checked. Bodies are
streamed raw (`Accept-Encoding: identity`, so no decompression bomb) and cut at `max_bytes`.
`trust_env=False` keeps `HTTP(S)_PROXY` from routing the request past the pin.

Known limit: name resolution (`getaddrinfo`) is not covered by `timeout_s`.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from sdcore.errors import InvalidInputError

MAX_REDIRECTS = 3
_REDIRECTS = {301, 302, 303, 307, 308}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class PinnedTarget:
    """A checked URL and the one address it will be fetched from."""

    url: httpx.URL
    ip: str

    def request_url(self) -> httpx.URL:
        return self.url.copy_with(host=self.ip)

    def headers(self) -> dict[str, str]:
        return {"Host": self.url.netloc.decode("ascii")}

    def extensions(self) -> dict[str, str]:
        return {"sni_hostname": self.host} if self.url.scheme == "https" else {}

    @property
    def host(self) -> str:
        return self.url.raw_host.decode("ascii")


def _resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order. Tests patch this."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, Teredo, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(address: str, allow_private: bool) -> str | None:
    """Why `address` may not be contacted, or None if it may."""
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 scope id
    if isinstance(ip, ipaddress.IPv6Address) and (v4 := _embedded_v4(ip)) is not None:
        return address_refusal(str(v4), allow_private)
    # Never allowed, even locally: cloud metadata lives on link-local (169.254.169.254).
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return None if allow_private else "loopback"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return None if allow_private else "private"
    if not ip.is_global:  # e.g. 100.64.0.0/10 carrier-grade NAT
        return None if allow_private else "non-public"
    return None


def pin_url(url: str | httpx.URL, *, allow_private: bool, field: str = "url") -> PinnedTarget:
    """Check `url` and every address its host resolves to; return it pinned to the first one.

    Raises
    ------
    InvalidInputError
        Not http(s), no host, credentials in the URL, the host does not resolve, or one of its
        addresses is not allowed.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise InvalidInputError(field, "is not a valid URL") from exc
    if parsed.scheme not in ("http", "https"):
        raise InvalidInputError(field, "must be an http or https URL")
    if not parsed.raw_host:
        raise InvalidInputError(field, "has no host")
    # Also refuse a bare "@": parsers disagree about such authorities.
    if parsed.userinfo or "@" in urlsplit(str(url)).netloc:
        raise InvalidInputError(field, "must not contain credentials")
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses = _resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise InvalidInputError(field, "host could not be resolved") from exc
    if not addresses:
        raise InvalidInputError(field, "host could not be resolved")
    for address in addresses:
        try:
            reason = address_refusal(address, allow_private)
        except ValueError as exc:
            raise InvalidInputError(field, "host resolves to an unusable address") from exc
        if reason is not None:
            raise InvalidInputError(field, f"host resolves to a {reason} address")
    return PinnedTarget(url=parsed, ip=addresses[0])


def check_url(url: str, allow_private: bool, *, field: str = "url") -> None:
    """Refuse `url` unless it could be fetched (see `pin_url`); makes no connection.

    Raises
    ------
    InvalidInputError
        As `pin_url`.
    """
    pin_url(url, allow_private=allow_private, field=field)


def new_client(timeout_s: float) -> httpx.Client:
    """A client that neither follows redirects nor reads proxy settings from the environment."""
    return httpx.Client(follow_redirects=False, trust_env=False, timeout=timeout_s)


@contextmanager
def open_pinned(
    client: httpx.Client,
    method: str,
    target: PinnedTarget,
    *,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> Iterator[httpx.Response]:
    """Send one request to `target`'s checked address; the response is streamed."""
    request = client.build_request(
        method,
        target.request_url(),
        headers={**(headers or {}), **target.headers()},
        content=content,
        extensions=target.extensions(),
    )
    response = client.send(request, stream=True)
    try:
        yield response
    finally:
        response.close()


@contextmanager
def _open_following(
    client: httpx.Client, url: str, allow_private: bool, field: str
) -> Iterator[httpx.Response]:
    """GET `url`, following redirects by hand, each hop checked and pinned; yields the final
    2xx response, streamed. Raises InvalidInputError (refused hop, too many redirects, non-2xx)."""
    current: str | httpx.URL = url
    for hop in range(MAX_REDIRECTS + 1):
        target = pin_url(current, allow_private=allow_private, field=field)
        with open_pinned(client, "GET", target, headers={"Accept-Encoding": "identity"}) as resp:
            location = resp.headers.get("Location")
            if resp.status_code in _REDIRECTS and location:
                if hop == MAX_REDIRECTS:
                    raise InvalidInputError(field, "redirected too many times")
                current = target.url.join(location)
                continue
            if not 200 <= resp.status_code < 300:
                raise InvalidInputError(field, f"answered HTTP {resp.status_code}")
            yield resp
            return
    raise AssertionError("unreachable")  # the loop always yields or raises


def fetch_url(
    url: str, *, allow_private: bool, max_bytes: int, timeout_s: float, field: str = "url"
) -> bytes:
    """GET `url` under the guard and return its body.

    `timeout_s` bounds each connect/read and also the whole fetch, redirects included.

    Raises
    ------
    InvalidInputError
        Refused URL or address (any hop), more than `MAX_REDIRECTS` redirects, a non-2xx answer,
        a body over `max_bytes`, a timeout, or a connection failure.
    """
    with stream_url(
        url,
        allow_private=allow_private,
        max_bytes=max_bytes,
        timeout_s=timeout_s,
        read_timeout_s=timeout_s,
        field=field,
    ) as (_, chunks):
        return b"".join(chunks)


@contextmanager
def stream_url(
    url: str,
    *,
    allow_private: bool,
    max_bytes: int,
    timeout_s: float,
    read_timeout_s: float = 30.0,
    field: str = "url",
) -> Iterator[tuple[int | None, Iterator[bytes]]]:
    """GET `url` under the guard and stream its body: yields (declared length or None, chunks).

    `read_timeout_s` bounds each connect/read; `timeout_s` the whole transfer, redirects
    included. Failures while reading the chunks raise the same errors as opening.

    Raises
    ------
    InvalidInputError
        As `fetch_url`.
    """
    deadline = time.monotonic() + timeout_s
    try:
        with (
            new_client(read_timeout_s) as client,
            _open_following(client, url, allow_private, field) as resp,
        ):
            declared = resp.headers.get("Content-Length", "")
            length = int(declared) if declared.isdigit() else None
            if length is not None and length > max_bytes:
                raise InvalidInputError(field, f"is larger than {max_bytes} bytes")
            yield length, _read_limited(resp, max_bytes, deadline, field)
    except httpx.TimeoutException as exc:
        raise InvalidInputError(field, "timed out") from exc
    except httpx.HTTPError as exc:
        raise InvalidInputError(field, "could not be fetched") from exc


def _read_limited(
    resp: httpx.Response, max_bytes: int, deadline: float, field: str
) -> Iterator[bytes]:
    read = 0
    # No chunk_size: it would buffer until full, hiding both the size and the deadline checks.
    for chunk in resp.iter_raw():
        read += len(chunk)
        if read > max_bytes:
            raise InvalidInputError(field, f"is larger than {max_bytes} bytes")
        # A server dribbling bytes never trips the per-read timeout; the deadline catches it.
        if time.monotonic() > deadline:
            raise InvalidInputError(field, "timed out")
        yield chunk
