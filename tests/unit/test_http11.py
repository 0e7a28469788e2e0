"""The NTLM channel's HTTP/1.1 client: framing read right, anything else refused, sizes bounded.

The peer is the other end of a socket pair, fed whole replies up front: no test waits on time
except the trickle, which ends because no byte follows, not because of how long it takes.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator

import pytest

from cmrunbook.remote.winrm.http11 import (
    MAX_HEAD,
    Connection,
    DeadlineError,
    Reply,
    ReplyTooLargeError,
    header_lines,
)

LIMIT = 1024
HEADERS = header_lines(("Content-Type", "application/soap+xml"))


@pytest.fixture
def pair() -> Iterator[tuple[Connection, socket.socket]]:
    ours, theirs = socket.socketpair()
    yield Connection(ours, "10.0.0.5", 5985, "/wsman"), theirs
    ours.close()
    theirs.close()


def exchange(pair: tuple[Connection, socket.socket], reply: bytes, seconds: float = 10) -> Reply:
    connection, peer = pair
    if reply:
        peer.sendall(reply)
    return connection.exchange(HEADERS, b"<x/>", deadline=time.monotonic() + seconds, limit=LIMIT)


def test_request_is_one_well_formed_post(pair: tuple[Connection, socket.socket]) -> None:
    exchange(pair, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    sent = pair[1].recv(4096)
    assert sent == (
        b"POST /wsman HTTP/1.1\r\nHost: 10.0.0.5:5985\r\n"
        b"Content-Type: application/soap+xml\r\nContent-Length: 4\r\n\r\n<x/>"
    )


def test_content_length_and_headers(pair: tuple[Connection, socket.socket]) -> None:
    reply = exchange(
        pair,
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Negotiate\r\n"
        b"www-authenticate: NTLM abc=\r\nContent-Length: 5\r\n\r\nhello",
    )
    assert (reply.status, reply.body) == (401, b"hello")
    assert reply.header("www-authenticate") == "Negotiate, NTLM abc="
    assert not pair[0].closed and not pair[0].idle_bytes()


def test_chunked_with_interim_reply_and_trailer(pair: tuple[Connection, socket.socket]) -> None:
    reply = exchange(
        pair,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-Trailer: 1\r\n\r\n",
    )
    assert (reply.status, reply.body) == (200, b"hello, world!!!")
    assert not pair[0].idle_bytes()


def test_close_and_bytes_out_of_turn_end_the_connection(
    pair: tuple[Connection, socket.socket],
) -> None:
    exchange(pair, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert pair[0].closed
    pair[0].closed = False
    exchange(pair, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nunasked")
    assert pair[0].idle_bytes()


def test_body_without_length_runs_to_the_close(pair: tuple[Connection, socket.socket]) -> None:
    connection, peer = pair
    peer.sendall(b"HTTP/1.0 200 OK\r\n\r\nall of it")
    peer.shutdown(socket.SHUT_WR)
    reply = connection.exchange(HEADERS, b"", deadline=time.monotonic() + 10, limit=LIMIT)
    assert reply.body == b"all of it" and connection.closed


@pytest.mark.parametrize(
    ("head", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n", "declares 1073741824"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40000000\r\n", "past 1024"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"200\r\n"
            + b"a" * 512
            + b"\r\n201\r\n",
            "past 1024",
        ),
    ],
    ids=["content-length", "one-huge-chunk", "chunks-add-up"],
)
def test_a_body_over_the_cap_is_refused_unread(
    pair: tuple[Connection, socket.socket], head: bytes, error: str
) -> None:
    # No body follows: a reader that tried to read it would wait for the deadline instead.
    with pytest.raises(ReplyTooLargeError, match=error):
        exchange(pair, head)


def test_a_body_without_length_over_the_cap_is_refused(
    pair: tuple[Connection, socket.socket],
) -> None:
    with pytest.raises(ReplyTooLargeError, match="past 1024"):
        exchange(pair, b"HTTP/1.1 200 OK\r\n\r\n" + b"a" * (LIMIT + 1))


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"HTTP/1.1 20 OK\r\n\r\n", http.client.BadStatusLine),
        (b"ICY 200 OK\r\n\r\n", http.client.BadStatusLine),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", http.client.HTTPException),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            http.client.HTTPException,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n",
            http.client.HTTPException,
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n", http.client.HTTPException),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", http.client.LineTooLong),
    ],
)
def test_what_is_not_strict_http_is_refused(
    pair: tuple[Connection, socket.socket], reply: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        exchange(pair, reply)


def test_a_peer_closing_without_an_answer(pair: tuple[Connection, socket.socket]) -> None:
    pair[1].shutdown(socket.SHUT_WR)
    with pytest.raises(http.client.RemoteDisconnected):
        exchange(pair, b"")


def test_a_truncated_body_is_incomplete(pair: tuple[Connection, socket.socket]) -> None:
    pair[1].sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    pair[1].shutdown(socket.SHUT_WR)
    with pytest.raises(http.client.IncompleteRead):
        exchange(pair, b"")


def test_a_trickle_ends_at_the_deadline(pair: tuple[Connection, socket.socket]) -> None:
    with pytest.raises(DeadlineError):
        exchange(pair, b"HTTP/1.1 200 OK\r\nContent-Le", seconds=0.2)


@pytest.mark.parametrize("target", ["/wsman HTTP/1.1\r\nX-Injected: 1", "/ws man", "wsman"])
def test_a_target_that_would_inject_is_refused(target: str) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs, pytest.raises(http.client.InvalidURL):
        Connection(ours, "10.0.0.5", 5985, target)


def test_an_ipv6_host_is_bracketed(pair: tuple[Connection, socket.socket]) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        connection = Connection(ours, "fe80::1", 5985, "/wsman")
        theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        connection.exchange(b"", b"", deadline=time.monotonic() + 10, limit=LIMIT)
        assert theirs.recv(4096).startswith(b"POST /wsman HTTP/1.1\r\nHost: [fe80::1]:5985\r\n")
