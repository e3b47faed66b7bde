"""Outbound HTTP to client-supplied URLs (dataset endpoints, callbacks), with an SSRF policy.

Dataset and callback URLs are fetched server-side, so by default the Factory refuses any
address that is not publicly routable. The URL string is checked when a job is created (a
literal address in any spelling, or a localhost name). When a connection is made, the name
is resolved once, every address it resolves to is checked, and the socket is opened only to
a checked address: no packet ever goes to a refused one, so DNS cannot smuggle a private
address past the first check, and a refusal reads the same whether or not anything listens
there. Redirects are never followed, and every response is bounded in size and time.
``allow_private`` relaxes the address rules for local development only.
"""

import errno
import functools
import http.client
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    LocationParseError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import connection

from aifactory.errors import EgressError, UnsendableRequest

if TYPE_CHECKING:  # requests is imported on first use: handlers that never send skip it
    import requests

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
_NUMERIC_HOST = re.compile(r"^[0-9a-fA-FxX.]+$")
# 64:ff9b::/96 (NAT64) embeds an IPv4 address in its last 32 bits.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


# A header name is an RFC 9110 token.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# HTTP/1.1 (RFC 9110 5.5): a field value is visible ASCII or obs-text, with spaces and tabs
# only between visible characters; nothing past Latin-1 (all http.client can send). Of
# obs-text only the printable part (0xA1-0xFF) is allowed: C1 controls and NBSP count as
# white space or controls to HTTP stacks. No line break (obs-fold), no other control.
_VISIBLE = r"\x21-\x7e\xa1-\xff"
_HEADER_VALUE = re.compile(rf"(?:[{_VISIBLE}](?:[ \t{_VISIBLE}]*[{_VISIBLE}])?)?")
# Headers that frame the request or address the connection are the HTTP client's to set:
# a client's own could corrupt the request it is sent with.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "proxy-authorization",
        "proxy-connection",
    }
)


def header_problem(name: Any, value: Any) -> str | None:
    """Why HTTP/1.1 cannot send this header, or None. Never quotes the value (a secret)."""
    if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
        return "has a name that is not a valid HTTP header name"
    if name.lower() in RESERVED_HEADERS:
        return "is set by the Factory's HTTP client and may not be given"
    if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
        return (
            "has a value HTTP/1.1 cannot send (only visible Latin-1 characters, with spaces "
            "or tabs between them; no control characters or line breaks)"
        )
    return None


def address_allowed(address: IPAddress) -> bool:
    """True only for a publicly routable unicast address (IPv4-in-IPv6 forms unwrapped)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address_allowed(address.ipv4_mapped)
        if address.sixtofour is not None:
            return address_allowed(address.sixtofour)
        if address.teredo is not None:
            return False
        if address in _NAT64:
            return address_allowed(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return bool(
        address.is_global
        and not (
            address.is_private
            or address.is_loopback
            or address.is_link_local
            or address.is_multicast
            or address.is_reserved
            or address.is_unspecified
        )
    )


def literal_address(host: str) -> IPAddress | None:
    """The address a host string denotes by itself, in any spelling, else None.

    Besides the canonical forms this catches what C resolvers accept: decimal
    (2130706433), octal (0177.0.0.1), hex (0x7f.0.0.1) and short forms (127.1).
    """
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_url(url: str, *, allow_private: bool) -> str | None:
    """Create-time check of a client URL. Returns a problem description, or None if fine."""
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    if any(c.isspace() for c in url):
        return "must not contain whitespace"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    host = parts.hostname
    if not host:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials; send them as headers"
    if port == 0:
        return "must not use port 0"
    if allow_private:
        return None
    address = literal_address(host)
    if address is not None:
        if not address_allowed(address):
            return f"points at a non-public address ({address})"
        return None
    # Looks numeric yet is no valid address: a resolver could still read it as one.
    if _NUMERIC_HOST.match(host) and all(
        label.isdigit() or label.lower().startswith("0x") for label in host.split(".")
    ):
        return "is not a valid address"
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost") or name.endswith(".internal"):
        return "points at a local host name"
    return None


def redact_url(url: str) -> str:
    """The URL without credentials or query values, fit for a manifest or a log."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    query = "&".join(f"{pair.split('=', 1)[0]}=REDACTED" for pair in parts.query.split("&") if pair)
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def vetted_addresses(host: str, port: int) -> list[str]:
    """Resolve `host` and return its addresses, if every one of them is public.

    One non-public answer refuses the name outright: a resolver that mixes a private address
    into a public answer is steering connections, whichever one would have been tried first.
    Raises EgressError (permanent) naming the refused address; nothing has been sent yet.
    """
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except UnicodeError:
        raise UnsendableRequest("URL has a host name that cannot be encoded") from None
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0])
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if not address_allowed(address):
            raise EgressError(f"refused to connect to non-public address {address}")
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, "no addresses")
    return addresses


def _connect_vetted(conn: HTTPConnection) -> socket.socket:
    """HTTPConnection._new_conn, connecting only to addresses vetted before any packet.

    The socket goes to the literal address; http.client still sends `Host: <name>` and
    HTTPSConnection still verifies the certificate and sends SNI for the original name
    (`conn.host`), as only the socket is made here.
    """
    try:
        addresses = vetted_addresses(conn._dns_host, conn.port)  # type: ignore[arg-type]
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    last: OSError | None = None
    for address in addresses:
        try:
            return connection.create_connection(
                (address, conn.port),  # type: ignore[arg-type]
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
            ) from exc
        except OSError as exc:
            last = exc
    raise NewConnectionError(conn, f"Failed to establish a new connection: {last}") from last


class _GuardedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _connect_vetted(self)


class _GuardedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _connect_vetted(self)


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


@functools.cache
def _guarded_adapter_class() -> type["requests.adapters.HTTPAdapter"]:
    from requests.adapters import HTTPAdapter

    class _GuardedAdapter(HTTPAdapter):
        """An adapter whose connections go only to addresses vetted before connecting."""

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {  # type: ignore[assignment]
                "http": _GuardedHTTPPool,
                "https": _GuardedHTTPSPool,
            }

    return _GuardedAdapter


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


class HttpClient:
    """requests, with the egress policy, no redirects, no proxies and bounded responses."""

    def __init__(
        self,
        *,
        allow_private: bool,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        total_timeout: float = 120.0,
        pool_maxsize: int = 10,
    ) -> None:
        self.allow_private = allow_private
        self.timeout = (connect_timeout, read_timeout)
        self.total_timeout = total_timeout
        self.pool_maxsize = pool_maxsize

    @functools.cached_property
    def _session(self) -> "requests.Session":
        """Built on first use, so a cold start that sends nothing does not import requests."""
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        session.trust_env = False  # no proxies or netrc from the environment
        # Keep-alive connections per host: as many as requests may be in flight at once.
        adapter_class = HTTPAdapter if self.allow_private else _guarded_adapter_class()
        adapter = adapter_class(pool_maxsize=self.pool_maxsize)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def request(
        self,
        method: str,
        url: str,
        *,
        max_bytes: int,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> HttpResponse:
        """Send one request. Raises EgressError with a header-free message on any failure."""
        import requests

        problem = check_url(url, allow_private=self.allow_private)
        if problem:
            raise EgressError(f"URL {problem}")
        # http.client lets NUL, other controls and spaces in names through onto the wire.
        for name, value in (headers or {}).items():
            if header_problem(name, value):
                raise UnsendableRequest("request cannot be sent as HTTP/1.1 (a header is invalid)")
        deadline = time.monotonic() + self.total_timeout
        try:
            with self._session.request(
                method,
                url,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
                **kwargs,
            ) as response:
                body = bytearray()
                for chunk in _as_it_arrives(response):
                    body.extend(chunk)
                    if len(body) > max_bytes:
                        raise EgressError(f"response is larger than {max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise EgressError(
                            f"response took longer than {self.total_timeout:.0f} s",
                            transient=True,
                        )
                return HttpResponse(response.status_code, bytes(body), response.headers)
        except EgressError:
            raise
        except _unsendable() as exc:
            # Building the request failed (a header or URL HTTP/1.1 cannot carry). The
            # exception's own text may quote a header value, so only its type is kept.
            raise UnsendableRequest(
                f"request cannot be sent as HTTP/1.1 ({type(exc).__name__})"
            ) from None
        except requests.exceptions.ConnectionError as exc:
            cause = _root_cause(exc)
            if isinstance(cause, EgressError):
                raise cause from None
            raise EgressError(
                f"could not connect: {why_not_connected(cause)}", transient=True
            ) from None
        except requests.exceptions.Timeout:
            raise EgressError("timed out", transient=True) from None
        except requests.exceptions.ChunkedEncodingError as exc:
            # The connection broke mid-body (reset, or closed short of its length): a fault
            # worth retrying, as a connection that could not be made is.
            broken = type(_root_cause(exc)).__name__
            raise EgressError(
                f"connection broke while reading the response ({broken})", transient=True
            ) from None
        except requests.exceptions.RequestException as exc:
            raise EgressError(f"request failed ({type(exc).__name__})") from None


def _as_it_arrives(response: "requests.Response") -> Iterator[bytes]:
    """The body, decoded, in pieces as they arrive: each piece is one read of the socket, so
    the total time bound is checked at least once per read timeout, however slowly the body
    trickles in. (`iter_content` waits for each whole chunk, so a body sent a byte at a time
    could outlast the bound by far.) urllib3's errors become requests' own, as in
    `iter_content`, except that a read timeout is a timeout (not a failure to connect)."""
    import requests

    try:
        while chunk := response.raw.read1(64 * 1024, decode_content=True):
            yield chunk
    except ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(exc) from exc
    except SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc


# Errors raised while a request is being built, before anything is sent: InvalidHeader and
# InvalidURL (requests), LocationParseError (urllib3), UnicodeEncodeError and ValueError
# (http.client refusing a header or URL). A retry builds the same request again.
@functools.cache
def _unsendable() -> tuple[type[BaseException], ...]:
    import requests

    return (
        requests.exceptions.InvalidHeader,
        requests.exceptions.InvalidURL,
        requests.exceptions.InvalidSchema,
        requests.exceptions.MissingSchema,
        LocationParseError,
        UnicodeError,
        ValueError,
    )


# Why a connection failed, in the words of someone reading a job's status or the terminal,
# not the socket error's type name. The first matching type wins (subclasses first).
_CONNECT_FAILURES: tuple[tuple[type[BaseException], str], ...] = (
    (socket.gaierror, "the name did not resolve"),
    (ConnectionRefusedError, "the connection was refused"),
    (TimeoutError, "the connection timed out"),
    (ConnectionResetError, "the connection was reset"),
    (http.client.RemoteDisconnected, "the server closed the connection without answering"),
    (ssl.SSLCertVerificationError, "the server's TLS certificate did not verify"),
    (ssl.SSLError, "the TLS handshake failed"),
)
_CONNECT_ERRNOS = {
    errno.ENETUNREACH: "the network is unreachable",
    errno.EHOSTUNREACH: "the host is unreachable",
}


def why_not_connected(cause: BaseException) -> str:
    """A connection failure's cause in words; the error's type name where none fit."""
    for kind, words in _CONNECT_FAILURES:
        if isinstance(cause, kind):
            return words
    if isinstance(cause, OSError) and cause.errno in _CONNECT_ERRNOS:
        return _CONNECT_ERRNOS[cause.errno]
    return f"the connection failed ({type(cause).__name__})"


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost cause of a requests/urllib3 error (not what was being handled).

    urllib3 keeps the cause of a failed retry in `reason`, requests keeps urllib3's error as
    its exception's first argument, and the connection attempt chains the socket's error.
    """
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        reason = getattr(exc, "reason", None)
        if not isinstance(reason, BaseException) and exc.args:
            reason = exc.args[0]
        nxt = reason if isinstance(reason, BaseException) else exc.__cause__
        if nxt is None:
            break
        exc = nxt
    return exc
