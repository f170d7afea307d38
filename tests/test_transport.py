"""The urllib3 transport: answers, pooling, and how far a failed request got.

Each failure is staged by a small server on loopback that misbehaves on purpose;
the client must then say whether the request may have reached Cloudflare.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from migrator.client import ClientConfig, ImagesClient
from migrator.emulator import Emulator
from migrator.errors import TransportError
from migrator.tokens import Secret
from migrator.transport import PooledTransport
from tests.fixtures.emulator import LocalOrigin
from tests.fixtures.runner import client_config

Handler = Callable[[socket.socket], None]


@contextlib.contextmanager
def serve(handle: Handler, wrap: ssl.SSLContext | None = None) -> Iterator[str]:
    """A loopback server that gives each connection to ``handle``; yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)
            if wrap is not None:
                try:
                    connection = wrap.wrap_socket(connection, server_side=True)
                except (ssl.SSLError, OSError):
                    continue
            threading.Thread(target=handle, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    scheme = "https" if wrap is not None else "http"
    try:
        yield f"{scheme}://localhost:{port}"
    finally:
        # Shutting the listener down wakes the thread blocked in accept().
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        for connection in accepted:
            connection.close()
        thread.join(timeout=5)


def read_request(connection: socket.socket) -> bytes:
    """The next request's head, or what came before the connection ended.

    The server closes every connection it accepted when a test ends, which can
    pull the socket from under a handler still waiting here.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = connection.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


def client_config_for(url: str) -> ClientConfig:
    """A client whose main API and batch host are both at ``url``."""
    return ClientConfig(
        account_id="a",
        api_token=Secret("t"),
        api_url=url,
        batch_url=url,
        connect_timeout=5.0,
        read_timeout=5.0,
    )


def send(url: str, **options: float) -> httpx.Response:
    timeout = httpx.Timeout(options.get("read", 5.0), connect=5.0)
    with httpx.Client(transport=PooledTransport(4), timeout=timeout) as client:
        return client.get(url)


def test_an_answer_is_returned_with_status_headers_and_body() -> None:
    def handle(connection: socket.socket) -> None:
        read_request(connection)
        connection.sendall(
            b"HTTP/1.1 201 Created\r\nX-A: 1\r\nX-A: 2\r\n"
            b"Content-Length: 5\r\n\r\nhello"
        )

    with serve(handle) as url:
        response = send(url)

    assert response.status_code == 201
    assert response.reason_phrase == "Created"
    assert response.headers.get_list("x-a") == ["1", "2"]
    assert response.content == b"hello"


def test_request_headers_leave_as_given_even_when_a_name_repeats() -> None:
    received: list[bytes] = []

    def handle(connection: socket.socket) -> None:
        received.append(read_request(connection))
        connection.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    headers = [(b"X-B", b"1"), (b"X-B", b"2"), (b"X-C", "caf\u00e9".encode())]
    with serve(handle) as url, httpx.Client(transport=PooledTransport(1)) as client:
        client.get(url, headers=headers)

    assert b"\r\nX-B: 1\r\nX-B: 2\r\n" in received[0]
    assert "\r\nX-C: caf\u00e9\r\n".encode() in received[0]


def test_an_answer_that_never_comes_is_a_read_timeout() -> None:
    def handle(connection: socket.socket) -> None:
        read_request(connection)
        threading.Event().wait(3)

    with serve(handle) as url, pytest.raises(httpx.ReadTimeout):
        send(url, read=0.3)


def test_a_body_cut_short_is_a_remote_protocol_error() -> None:
    def handle(connection: socket.socket) -> None:
        read_request(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        connection.close()

    with serve(handle) as url, pytest.raises(httpx.RemoteProtocolError) as caught:
        send(url)

    assert str(caught.value) == (
        "Connection broken: IncompleteRead(5 bytes read, 95 more expected)"
    )


def test_a_connection_closed_before_the_answer_may_have_reached_cloudflare() -> None:
    def handle(connection: socket.socket) -> None:
        read_request(connection)
        connection.close()

    with serve(handle) as url:
        client = ImagesClient(client_config_for(url))
        with client, pytest.raises(TransportError) as caught:
            client.fetch_batch_token()

    assert caught.value.may_have_reached


def test_an_untrusted_certificate_is_refused_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes"),
            *("-days", "1", "-subj", "/CN=localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    received: list[bytes] = []

    def handle(connection: socket.socket) -> None:
        received.append(read_request(connection))

    with serve(handle, wrap=context) as url:
        with pytest.raises(httpx.ConnectError):
            send(url)
        client = ImagesClient(client_config_for(url))
        with client, pytest.raises(TransportError) as caught:
            client.fetch_batch_token()

    assert not caught.value.may_have_reached
    assert received == []


def test_connections_are_reused_and_never_more_than_the_pool_holds() -> None:
    connections: list[int] = []
    lock = threading.Lock()

    def handle(connection: socket.socket) -> None:
        with lock:
            connections.append(1)
        while read_request(connection):
            threading.Event().wait(0.05)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with serve(handle) as url, httpx.Client(transport=PooledTransport(2)) as client:
        threads = [
            threading.Thread(target=lambda: [client.get(url) for _ in range(3)])
            for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert len(connections) == 2


def test_an_answer_abandoned_early_leaves_the_pool_usable(
    emulator: Emulator, origin: LocalOrigin
) -> None:
    url = origin.synthetic(400, 400)
    with ImagesClient(client_config(emulator)) as client:
        first = client.peek(url, length=16)
        whole = client.download(url)
        again = client.peek(url, length=16)

    assert first.head == again.head == whole[:16]
    assert first.size == len(whole)
