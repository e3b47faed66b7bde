"""Connections under the egress policy: every resolved address is vetted before any packet,
and a request HTTP/1.1 cannot carry fails as permanent, without quoting its headers."""

import contextlib
import gzip
import http.server
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aifactory import egress
from aifactory.egress import HttpClient
from aifactory.errors import EgressError, UnsendableRequest
from tests.integration.flow import call, seed_request, stage_pending
from tests.support import unused_port

PUBLIC = "93.184.215.14"
SECRET = "hunter2-SECRET"


class Listener:
    """A listening TCP socket whose backlog shows whether anyone connected."""

    def __init__(self, host: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def accepted_nothing(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return True
        conn.close()
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    sock = Listener("127.0.0.1")
    yield sock
    sock.close()


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names under .example resolve to the addresses the test gives them."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(host, str) and host in answers:
            infos = []
            for address in answers[host]:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sockaddr = (address, port, 0, 0) if ":" in address else (address, port)
                infos.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
            return infos
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(["127.0.0.1"], id="loopback"),
        pytest.param(["::ffff:127.0.0.1"], id="ipv4-mapped-loopback"),
        pytest.param([PUBLIC, "127.0.0.1"], id="public-then-loopback"),
        pytest.param(["127.0.0.1", PUBLIC], id="loopback-then-public"),
        pytest.param(["2606:4700::1111", "127.0.0.1"], id="public-v6-then-loopback"),
        pytest.param(["::ffff:7f00:1", PUBLIC], id="mapped-hex-then-public"),
    ],
)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_name_resolving_to_a_refused_address_gets_no_packet(dns, listener, answer, scheme):
    # Given a public-looking name whose DNS answer includes loopback, where something listens
    dns["data.example.com"] = answer
    client = HttpClient(allow_private=False, connect_timeout=2)
    # When the strict client is asked to fetch from it
    with pytest.raises(EgressError) as refused:
        client.request("POST", f"{scheme}://data.example.com:{listener.port}/x", max_bytes=100)
    # Then it is refused as permanent, and the listener never saw a connection
    assert not refused.value.transient
    assert str(refused.value).startswith("refused to connect to non-public address")
    assert listener.accepted_nothing()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://2130706433:{port}/",
        "http://0177.0.0.1:{port}/",
        "http://0x7f.1:{port}/",
        "http://127.1:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://localhost:{port}/",
        "http://LOCALHOST.:{port}/",
    ],
)
def test_literal_refused_addresses_in_any_spelling_get_no_packet(listener, url):
    client = HttpClient(allow_private=False, connect_timeout=2)
    with pytest.raises(EgressError) as refused:
        client.request("GET", url.format(port=listener.port), max_bytes=100)
    assert not refused.value.transient
    assert listener.accepted_nothing()


def test_refusal_reads_the_same_whether_or_not_something_listens(dns, listener):
    # Given two names for loopback: one port with a listener, one port with none
    closed_port = unused_port()
    dns["open.example.com"] = ["127.0.0.1"]
    dns["closed.example.com"] = ["127.0.0.1"]
    client = HttpClient(allow_private=False, connect_timeout=2)
    reasons = []
    for url in (
        f"http://open.example.com:{listener.port}/",
        f"http://closed.example.com:{closed_port}/",
    ):
        with pytest.raises(EgressError) as refused:
            client.request("GET", url, max_bytes=100)
        reasons.append((type(refused.value), str(refused.value), refused.value.transient))
    # Then both failures are the same, revealing nothing about the ports
    assert reasons[0] == reasons[1]
    assert listener.accepted_nothing()


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = (self.headers.get("Host") or "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(
    handler: type[http.server.BaseHTTPRequestHandler], host: str = "127.0.0.1"
) -> Iterator[int]:
    """An HTTP server answering with `handler` on `host`, for the block; yields its port."""
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def echo_server() -> Iterator[int]:
    with serving(_Echo) as port:
        yield port


@pytest.fixture
def loopback_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count 127.0.0.0/8 as public, so the strict client's own connections reach the test's
    servers (the tests cannot reach a real public address)."""
    real_allowed = egress.address_allowed
    loopback = ipaddress.ip_network("127.0.0.0/8")
    monkeypatch.setattr(egress, "address_allowed", lambda a: a in loopback or real_allowed(a))


def test_a_vetted_address_is_connected_to_with_the_original_host_name(
    dns, echo_server, loopback_is_public
):
    # Given a name whose every address is allowed (loopback counted as public for this test)
    dns["hooks.example.com"] = ["127.0.0.1"]
    client = HttpClient(allow_private=False)
    # When it is fetched
    response = client.request("GET", f"http://hooks.example.com:{echo_server}/", max_bytes=100)
    # Then the connection went to the vetted address and Host still names the server
    assert response.status == 200
    assert response.body == f"hooks.example.com:{echo_server}".encode()


def test_a_guarded_connection_tries_each_vetted_address_in_turn(dns, loopback_is_public):
    # Given a name with two addresses: nothing listens on the first, a server on the second
    dns["data.example.com"] = ["127.0.0.1", "127.0.0.2"]
    with serving(_Echo, "127.0.0.2") as port:
        # When the strict client fetches from it
        response = HttpClient(allow_private=False, connect_timeout=2).request(
            "GET", f"http://data.example.com:{port}/", max_bytes=100
        )
    # Then the refusal of the first address did not end the request: the second answered
    assert response.status == 200
    assert response.body == f"data.example.com:{port}".encode()


def test_a_guarded_connection_every_address_refuses_is_transient_and_names_its_cause(
    dns, loopback_is_public
):
    # Given a name whose two addresses both refuse connections
    port = unused_port()
    dns["data.example.com"] = ["127.0.0.1", "127.0.0.3"]
    # When the strict client sends a request there
    with pytest.raises(EgressError) as failed:
        HttpClient(allow_private=False, connect_timeout=2).request(
            "GET", f"http://data.example.com:{port}/", max_bytes=100
        )
    # Then, as without the guard, it is worth retrying and names the socket's error
    assert failed.value.transient
    assert str(failed.value) == "could not connect: the connection was refused"


def test_a_guarded_connection_keeps_the_connect_timeout_and_socket_options(
    dns, echo_server, loopback_is_public, monkeypatch
):
    # Given a vetted name, and a record of the sockets the guard opens
    dns["data.example.com"] = ["127.0.0.1"]
    opened: list[tuple[Any, int]] = []
    real_create = egress.connection.create_connection

    def create_connection(address, timeout, *args, **kwargs):  # type: ignore[no-untyped-def]
        sock = real_create(address, timeout, *args, **kwargs)
        opened.append((timeout, sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
        return sock

    monkeypatch.setattr(egress.connection, "create_connection", create_connection)
    # When the strict client fetches from it
    client = HttpClient(allow_private=False, connect_timeout=1.5, read_timeout=7)
    response = client.request("GET", f"http://data.example.com:{echo_server}/", max_bytes=100)
    # Then its one connection was bounded by the connect timeout, and has urllib3's usual
    # socket options (no Nagle delay), as an unguarded connection has
    assert response.status == 200
    assert opened == [(1.5, 1)]


def test_a_guarded_connection_that_times_out_is_transient(dns, loopback_is_public, monkeypatch):
    # Given a vetted name whose connection attempt times out (played by the socket layer: a
    # connect timeout cannot be produced on the loopback interface)
    dns["data.example.com"] = ["127.0.0.1"]

    def times_out(address, timeout, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise TimeoutError("timed out")

    monkeypatch.setattr(egress.connection, "create_connection", times_out)
    # When the strict client sends a request there, Then it failed as worth retrying
    with pytest.raises(EgressError) as failed:
        HttpClient(allow_private=False, connect_timeout=2).request(
            "GET", "http://data.example.com:8080/", max_bytes=100
        )
    assert failed.value.transient
    assert str(failed.value) == "could not connect: the connection timed out"


def test_a_name_that_resolves_to_no_address_fails_as_a_resolution_error(dns):
    # Given a resolver that answers a name with no address at all
    dns["data.example.com"] = []
    # When the strict client sends a request there
    with pytest.raises(EgressError) as failed:
        HttpClient(allow_private=False, connect_timeout=2).request(
            "GET", "http://data.example.com:8080/", max_bytes=100
        )
    # Then it fails as a name that did not resolve (worth retrying), as an unknown name does
    assert failed.value.transient
    assert str(failed.value) == "could not connect: the name did not resolve"


@pytest.mark.parametrize("allow_private", [False, True], ids=["deployed", "local"])
def test_an_unknown_host_name_fails_in_words_a_person_reads(allow_private, monkeypatch):
    # Given a resolver that knows no such name (as for a typo in a dataset or callback URL)
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "no-such-host.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    # When a request is sent there, deployed (guarded) or locally (private addresses allowed)
    with pytest.raises(EgressError) as failed:
        HttpClient(allow_private=allow_private, connect_timeout=2).request(
            "GET", "http://no-such-host.example:8080/", max_bytes=100
        )
    # Then the reason says what happened, not the socket error's type name
    assert failed.value.transient
    assert str(failed.value) == "could not connect: the name did not resolve"


@pytest.mark.parametrize("allow_private", [False, True])
def test_pool_size_is_passed_to_every_mounted_adapter(allow_private):
    client = HttpClient(allow_private=allow_private, pool_maxsize=17)
    for prefix in ("http://", "https://"):
        adapter = client._session.get_adapter(prefix + "example.com/")
        assert adapter._pool_maxsize == 17  # type: ignore[attr-defined]


# -- requests that cannot be built -----------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Authorization": f"Bearer {SECRET} \u20ac"}, id="beyond-latin-1"),
        pytest.param({"Authorization": f"{SECRET}\U0001f600"}, id="emoji"),
        pytest.param({"Authorization": f"{SECRET}\r\nX-Injected: 1"}, id="crlf"),
        pytest.param({"Authorization": f"{SECRET}\n"}, id="trailing-lf"),
        pytest.param({"Authorization": f" {SECRET}"}, id="leading-space"),
        pytest.param({"Authorization": f"{SECRET}\x00"}, id="nul"),
        pytest.param({"X Bad": SECRET}, id="space-in-name"),
        pytest.param({"X-Bad:": SECRET}, id="colon-in-name"),
        pytest.param({"X-K\u00e9y\u20ac": SECRET}, id="non-latin-1-name"),
        pytest.param({"": SECRET}, id="empty-name"),
    ],
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_headers_http_cannot_carry_raise_unsendable_without_the_value(
    dns, echo_server, monkeypatch, headers, allow_private
):
    monkeypatch.setattr(egress, "address_allowed", lambda a: True)
    dns["hooks.example.com"] = ["127.0.0.1"]
    client = HttpClient(allow_private=allow_private)
    with pytest.raises(UnsendableRequest) as unsendable:
        client.request(
            "POST", f"http://hooks.example.com:{echo_server}/", max_bytes=100, headers=headers
        )
    assert unsendable.value.transient is False
    assert SECRET not in str(unsendable.value)
    assert unsendable.value.__cause__ is None
    assert str(unsendable.value).startswith("request cannot be sent as HTTP/1.1")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Authorization": f"Bearer {SECRET} \u20ac"}, id="beyond-latin-1"),
        pytest.param({"Authorization": f"{SECRET}\r\nX-Injected: 1"}, id="crlf"),
        pytest.param({"Authorization": f" {SECRET}"}, id="leading-space"),
        pytest.param({"X-K\u00e9y\u20ac": SECRET}, id="non-latin-1-name"),
        pytest.param({"X-Bad:": SECRET}, id="colon-in-name"),
    ],
)
def test_errors_of_the_http_stack_while_building_become_unsendable(
    dns, echo_server, monkeypatch, headers
):
    # Given the client's own header check out of the way, so the HTTP stack meets the header
    monkeypatch.setattr(egress, "header_problem", lambda name, value: None)
    monkeypatch.setattr(egress, "address_allowed", lambda a: True)
    dns["hooks.example.com"] = ["127.0.0.1"]
    client = HttpClient(allow_private=False)
    # When the request is sent, Then whatever the stack raises becomes UnsendableRequest
    with pytest.raises(UnsendableRequest) as unsendable:
        client.request(
            "POST", f"http://hooks.example.com:{echo_server}/", max_bytes=100, headers=headers
        )
    assert unsendable.value.transient is False
    assert SECRET not in str(unsendable.value)
    # naming only the kind of error, which is all the HTTP stack's message may safely give
    assert str(unsendable.value) in (
        "request cannot be sent as HTTP/1.1 (InvalidHeader)",
        "request cannot be sent as HTTP/1.1 (UnicodeEncodeError)",
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://exa\u0000mple.com:{port}/",
        "http://" + "a" * 64 + ".example.com:{port}/",
    ],
    ids=["nul-in-host", "label-too-long"],
)
def test_urls_http_cannot_carry_raise_unsendable(echo_server, url):
    client = HttpClient(allow_private=True)
    with pytest.raises(UnsendableRequest) as unsendable:
        client.request("GET", url.format(port=echo_server), max_bytes=100)
    assert unsendable.value.transient is False


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(["127.0.0.1"], id="loopback"),
        pytest.param(["::ffff:127.0.0.1"], id="ipv4-mapped-loopback"),
        pytest.param([PUBLIC, "127.0.0.1"], id="public-then-loopback"),
        pytest.param(["2606:4700::1111", "::ffff:7f00:1"], id="public-v6-then-mapped"),
    ],
)
def test_dataset_and_callback_connections_never_reach_a_refused_address(
    fns, aws, factory_env, settings_override, dns, answer
):
    # Given the deployed (strict) policy, and dataset and callback names resolving to
    # loopback, where something listens
    settings_override(ALLOW_PRIVATE_URLS="false")
    data, hooks = Listener("127.0.0.1"), Listener("127.0.0.1")
    try:
        dns["data.example.com"] = answer
        dns["hooks.example.com"] = answer
        body = seed_request(
            f"http://data.example.com:{data.port}/fetch",
            f"http://hooks.example.com:{hooks.port}/callback",
        )
        status, created, _ = call(fns, "create_training_job", body)
        assert status == 200, created
        # When the job is staged (and its failure reported to the callback)
        stage_pending(fns, aws, factory_env)
        # Then the job failed saying why, and neither listener saw a connection
        job = call(fns, "check_training_status", {"job_name": created["job_name"]})[1]
        assert job["status"] == "Failed"
        assert "refused to connect to non-public address" in job["failure_reason"]
        assert data.accepted_nothing() and hooks.accepted_nothing()
    finally:
        data.close()
        hooks.close()


def _self_signed(tmp_path, name: str) -> tuple[str, str]:
    """A certificate for `name` only (and its key), as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_tls_to_a_vetted_address_keeps_sni_and_certificate_checks_for_the_name(
    dns, loopback_is_public, tmp_path
):
    import ssl

    # Given a TLS server on a vetted address whose certificate names hooks.example.com only
    cert, key = _self_signed(tmp_path, "hooks.example.com")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server_names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    dns["hooks.example.com"] = ["127.0.0.1"]
    dns["other.example.com"] = ["127.0.0.1"]
    client = HttpClient(allow_private=False)
    try:
        # When the name the certificate carries is fetched over the vetted address
        response = client.request(
            "GET", f"https://hooks.example.com:{port}/", max_bytes=100, verify=cert
        )
        # Then SNI and Host carry the name, and the certificate was accepted for it
        assert response.status == 200
        assert response.body == f"hooks.example.com:{port}".encode()
        assert server_names[-1] == "hooks.example.com"
        # and another name on the same address fails the certificate check
        with pytest.raises(EgressError):
            client.request("GET", f"https://other.example.com:{port}/", max_bytes=100, verify=cert)
        assert server_names[-1] == "other.example.com"
    finally:
        server.shutdown()
        server.server_close()


def test_a_refused_connection_is_transient_and_names_its_cause():
    # Given a port nothing listens on
    port = unused_port()
    # When a request is sent there
    with pytest.raises(EgressError) as failed:
        HttpClient(allow_private=True, connect_timeout=2).request(
            "GET", f"http://127.0.0.1:{port}/", max_bytes=100
        )
    # Then it is worth retrying, and the reason names the socket's error, not requests' wrapper
    assert failed.value.transient
    assert str(failed.value) == "could not connect: the connection was refused"


def test_a_host_name_that_cannot_be_encoded_is_refused_as_permanent():
    # Given a host name with a label longer than DNS allows
    url = "http://" + "a" * 64 + ".example.com/"
    # When a request is sent there, Then it is refused before anything is sent, saying why
    with pytest.raises(UnsendableRequest) as refused:
        HttpClient(allow_private=False, connect_timeout=2).request("GET", url, max_bytes=100)
    assert str(refused.value) == "URL has a host name that cannot be encoded"
    assert not refused.value.transient


def test_an_endpoint_that_never_answers_times_out(listener):
    # Given an endpoint that takes the connection (into its backlog) but never answers
    client = HttpClient(allow_private=True, connect_timeout=1, read_timeout=0.5)
    outcome: list[BaseException] = []

    def send() -> None:
        try:
            client.request("GET", f"http://127.0.0.1:{listener.port}/", max_bytes=100)
        except EgressError as exc:
            outcome.append(exc)

    # When a request is sent there (in a thread, so that a request that hangs fails the test)
    worker = threading.Thread(target=send, daemon=True)
    worker.start()
    worker.join(10)
    # Then it gives up after the read timeout, as a failure worth retrying
    assert not worker.is_alive(), "the request never timed out"
    (failed,) = outcome
    assert failed.transient and str(failed) == "timed out"


class _Paced(http.server.BaseHTTPRequestHandler):
    """Answers at once that 100 bytes follow, then sends `pieces` pieces of `piece` bytes,
    pausing `pause` seconds after each: by default a byte every 0.1 s for up to 10 s."""

    piece, pieces, pause = 1, 100, 0.1

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        try:
            for _ in range(self.pieces):
                self.wfile.write(b"x" * self.piece)
                self.wfile.flush()
                time.sleep(self.pause)
        except OSError:
            pass  # the client gave up

    def log_message(self, *args: object) -> None:
        pass


# 10 of its 100 bytes, then nothing for 3 s.
_Stall = type("_Stall", (_Paced,), {"piece": 10, "pieces": 1, "pause": 3})


def test_a_body_that_stalls_past_the_read_timeout_times_out_as_transient():
    # Given an endpoint that stops sending in the middle of its body
    client = HttpClient(allow_private=True, read_timeout=0.5, total_timeout=60)
    # When a request is sent there
    with serving(_Stall) as port, pytest.raises(EgressError) as failed:
        client.request("GET", f"http://127.0.0.1:{port}/", max_bytes=1000)
    # Then it timed out, worth retrying, and is not mistaken for a connection never made
    assert str(failed.value) == "timed out"
    assert failed.value.transient


def test_a_body_that_trickles_in_past_the_total_timeout_is_cut_off_as_transient():
    # Given an endpoint that keeps each read well inside the read timeout, but whose body
    # would take 10 s
    client = HttpClient(allow_private=True, read_timeout=5, total_timeout=1)
    started = time.monotonic()
    # When a request is sent there
    with serving(_Paced) as port, pytest.raises(EgressError) as failed:
        client.request("GET", f"http://127.0.0.1:{port}/", max_bytes=1000)
    # Then it was given up soon after the total timeout, as a failure worth retrying
    assert time.monotonic() - started < 5
    assert str(failed.value) == "response took longer than 1 s"
    assert failed.value.transient


class _Gzip(http.server.BaseHTTPRequestHandler):
    """Answers with the gzip-compressed bytes of `size` zeros."""

    size = 0

    def do_GET(self) -> None:  # noqa: N802
        body = gzip.compress(b"0" * self.size)
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("size", "outcome"),
    [
        (50_000, "50000 bytes"),
        (100_000, "100000 bytes"),  # exactly the bound
        (100_001, "response is larger than 100000 bytes"),
        (20_000_000, "response is larger than 100000 bytes"),
    ],
)
def test_a_compressed_body_is_decoded_and_bounded_by_its_decoded_size(size, outcome):
    # Given an endpoint that answers gzip-compressed (20 MB of zeros is about 20 kB of gzip)
    with serving(type("Handler", (_Gzip,), {"size": size})) as port:
        # When a response bounded to 100 kB is read
        try:
            response = HttpClient(allow_private=True).request(
                "GET", f"http://127.0.0.1:{port}/", max_bytes=100_000
            )
            result = f"{len(response.body)} bytes"
            assert response.body == b"0" * size
        except EgressError as exc:
            result = str(exc)
    # Then one up to the bound arrives decoded, and a larger one is refused by what it
    # decodes to
    assert result == outcome


class _NotGzip(_Gzip):
    """Says its body is gzip-compressed, and sends plain bytes."""

    def do_GET(self) -> None:  # noqa: N802
        body = b"not compressed at all"
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_body_that_cannot_be_decoded_fails_as_permanent_naming_the_error():
    # Given an endpoint whose body is not in the encoding it announces
    # When a request is sent there
    with serving(_NotGzip) as port, pytest.raises(EgressError) as failed:
        HttpClient(allow_private=True).request("GET", f"http://127.0.0.1:{port}/", max_bytes=1000)
    # Then it fails for good (asking again gets the same bytes), naming the kind of error
    assert not failed.value.transient
    assert str(failed.value) == "request failed (ContentDecodingError)"


class _Short(http.server.BaseHTTPRequestHandler):
    """Promises 100 bytes, sends 10, and closes the connection."""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.write(b"x" * 10)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_a_connection_that_breaks_mid_body_is_transient_and_says_so():
    # Given an endpoint whose connection closes short of the body it announced
    # When a request is sent there
    with serving(_Short) as port, pytest.raises(EgressError) as failed:
        HttpClient(allow_private=True).request("GET", f"http://127.0.0.1:{port}/", max_bytes=1000)
    # Then it is worth retrying (a page is asked again, a callback tried again), saying why
    assert failed.value.transient
    assert str(failed.value) == "connection broke while reading the response (IncompleteRead)"


def test_a_url_the_policy_refuses_is_refused_at_send_time_with_its_reason(listener):
    # Given a URL that create-time checks would refuse (a job record may predate a rule)
    client = HttpClient(allow_private=False, connect_timeout=2)
    # When a request is sent to it, Then it is refused as permanent, saying why, and no
    # connection is made
    with pytest.raises(EgressError) as refused:
        client.request("GET", f"http://127.0.0.1:{listener.port}/x", max_bytes=100)
    assert not refused.value.transient
    assert str(refused.value).startswith("URL ")
    with pytest.raises(EgressError) as refused:
        client.request("GET", "ftp://data.example.com/x", max_bytes=100)
    assert str(refused.value) == "URL must be an http or https URL"
    assert listener.accepted_nothing()
