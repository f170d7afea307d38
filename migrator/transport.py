"""The wire under migrator's httpx client: urllib3's connection pools.

httpx's default transport parses HTTP/1.1 in pure Python (httpcore and h11) and
looks through every pooled connection for each request; at a few hundred requests
a second from threads sharing one interpreter lock, that was most of migrator's
CPU. ``PooledTransport`` keeps httpx's requests, responses and exceptions for the
rest of the client, and sends the bytes through urllib3, which parses with the
standard library's ``http.client`` and hands out a pooled connection in constant
time.

Whatever goes wrong on the wire is raised as the httpx exception that says how far
the request got: ``ConnectError``, ``ConnectTimeout`` and ``PoolTimeout`` only when
nothing of it can have left this process, everything else (read timeouts,
connections dropped before or during the answer) as errors of a request that may
have been acted on.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator, Mapping

import httpx
import urllib3
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    EmptyPoolError,
    LocationValueError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util.ssl_match_hostname import CertificateError

__all__ = ["PooledTransport"]

CHUNK_BYTES = 64 * 1024
"""Largest piece of an answer read at once: downloads stream, memory stays flat."""

HOST_POOLS = 32
"""Hosts whose connections stay pooled (Cloudflare's two, plus origins)."""

_HTTP_VERSIONS = {10: b"HTTP/1.0", 11: b"HTTP/1.1"}


class PooledTransport(httpx.BaseTransport):
    """Send httpx requests over urllib3, at most ``connections`` at once per host.

    Requests beyond that wait for a connection to come free, as httpx's own pool
    does with no pool timeout. Certificates and host names are verified with the
    TLS settings httpx itself would use: certifi's bundle, or the one named by
    ``SSL_CERT_FILE`` or ``SSL_CERT_DIR``.
    """

    def __init__(self, connections: int) -> None:
        context = httpx.create_ssl_context()
        self._pools = urllib3.PoolManager(
            num_pools=HOST_POOLS,
            maxsize=connections,
            block=True,
            ssl_context=context,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return its answer with the body still to be read."""
        url = request.url
        timeouts = request.extensions.get("timeout", {})
        headers = _headers(request.headers.raw)

        try:
            pool = self._pools.connection_from_host(
                url.host, port=url.port, scheme=url.scheme
            )
            answer = pool.urlopen(
                request.method,
                url.raw_path.decode("ascii"),
                body=_body(request),
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=urllib3.Timeout(
                    connect=timeouts.get("connect"), read=timeouts.get("read")
                ),
                pool_timeout=timeouts.get("pool"),
                preload_content=False,
                decode_content=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise _mapped(error, request) from error

        return httpx.Response(
            answer.status,
            headers=list(answer.headers.items()),
            stream=_AnswerBody(answer, request),
            extensions={
                "http_version": _HTTP_VERSIONS.get(answer.version, b"HTTP/1.1"),
                "reason_phrase": answer.reason.encode("latin-1")
                if answer.reason
                else b"",
            },
        )

    def close(self) -> None:
        """Close every pooled connection."""
        self._pools.clear()


class _AnswerBody(httpx.SyncByteStream):
    """An answer's body, read from its connection as httpx asks for it.

    A body read to its end leaves the connection in the pool for the next
    request; one abandoned early closes it, since unread bytes would otherwise
    be taken for the next answer.
    """

    def __init__(self, answer: urllib3.BaseHTTPResponse, request: httpx.Request):
        self._answer = answer
        self._request = request
        self._finished = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._answer.stream(CHUNK_BYTES, decode_content=False)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise _mapped(error, self._request) from error
        self._finished = True

    def close(self) -> None:
        if not self._finished:
            self._answer.close()
        self._answer.release_conn()


def _headers(raw: list[tuple[bytes, bytes]]) -> Mapping[str, str]:
    """The request's headers for urllib3, each name and value byte for byte.

    Latin-1 maps each byte to one character, which http.client encodes back to
    the same byte. A plain dict costs less than urllib3's multi-valued one,
    which is needed only when a name repeats.
    """
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in raw}
    if len(headers) == len(raw):
        return headers
    repeated = urllib3.HTTPHeaderDict()
    for name, value in raw:
        repeated.add(name.decode("latin-1"), value.decode("latin-1"))
    return repeated


def _body(request: httpx.Request) -> bytes | Iterator[bytes] | None:
    """The request's body: bytes when httpx holds it whole, else its stream."""
    if isinstance(request.stream, httpx.ByteStream):
        # httpx already wrote Content-Length: 0 where the method expects a body;
        # None keeps urllib3 from adding a second one.
        return request.content or None
    # A sync client only ever builds sync streams.
    assert isinstance(request.stream, httpx.SyncByteStream)
    return iter(request.stream)


def _mapped(error: Exception, request: httpx.Request) -> httpx.TransportError:
    """The httpx exception for a urllib3 failure, saying how far the request got.

    Only failures that certainly came before the first byte of the request left
    become connect or pool errors; when the stage is unknown the request counts
    as possibly received, since taking a sent request for unsent could store an
    image twice, and the reverse only costs a look-up.
    """
    message = _message(error)
    if isinstance(error, NewConnectionError):
        # Also covers a name that does not resolve (NameResolutionError).
        return httpx.ConnectError(message, request=request)
    if isinstance(error, ConnectTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(error, (EmptyPoolError, ClosedPoolError)):
        return httpx.PoolTimeout(message, request=request)
    if isinstance(error, ReadTimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(error, SSLError) and _refused_certificate(error):
        # Verification ends the handshake, before the request is written.
        return httpx.ConnectError(message, request=request)
    if isinstance(error, LocationValueError):
        return httpx.UnsupportedProtocol(message, request=request)
    if isinstance(error, ProtocolError) and isinstance(
        _cause(error), http.client.HTTPException
    ):
        # The peer closed the connection or broke HTTP before a whole answer.
        return httpx.RemoteProtocolError(message, request=request)
    return httpx.ReadError(message, request=request)


def _message(error: Exception) -> str:
    """What went wrong, in urllib3's words, without the exception it wraps.

    urllib3 passes the wrapped exception as a second argument, which ``str``
    would print as a tuple that says the same thing twice.
    """
    if error.args and isinstance(error.args[0], str) and error.args[0]:
        return error.args[0]
    return str(error) or type(error).__name__


def _refused_certificate(error: SSLError) -> bool:
    cause = _cause(error)
    return isinstance(cause, (ssl.SSLCertVerificationError, CertificateError))


def _cause(error: urllib3.exceptions.HTTPError) -> BaseException | None:
    """The exception urllib3 wrapped: its last argument, else the one chained."""
    if error.args and isinstance(error.args[-1], BaseException):
        return error.args[-1]
    return error.__cause__ or error.__context__
