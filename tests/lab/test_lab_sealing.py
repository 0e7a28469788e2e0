"""The lab's side of WinRM message encryption against pywinrm's own ``Encryption``.

The lab seals and unseals with its own code (:mod:`cmrunbook_lab.winrm.encryption`) over its
own NTLM acceptor, never the engine's; pywinrm, which has talked to real Windows hosts for
years, is the reference that both must agree with.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import requests
import spnego
from requests_ntlm.requests_ntlm import ShimSessionSecurity
from winrm.encryption import Encryption

from cmrunbook_lab.winrm.encryption import (
    REPLY_CONTENT_TYPE,
    SealingError,
    is_encrypted,
    seal_reply,
    unseal_request,
)
from cmrunbook_lab.winrm.ntlm import AuthenticationFailed, CredentialFile, NTLMAcceptor

USER, PASSWORD = "LAB\\labadmin", "S3cret-pa55!"
URL = "http://127.0.0.1:5985/wsman"
SOAP = '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">Grüße</s:Envelope>'


@pytest.fixture
def pair() -> Iterator[tuple[spnego.ContextProxy, NTLMAcceptor]]:
    """A client context and the lab's acceptor after a complete NTLM handshake."""
    users = CredentialFile({USER: PASSWORD})
    try:
        client = spnego.client(USER, PASSWORD, protocol="ntlm")
        server = NTLMAcceptor(users)
        challenge = server.step(client.step())
        assert server.step(client.step(challenge)) is None
        assert server.complete and client.complete
        assert server.username is not None and server.username.lower() == USER.lower()
        yield client, server
    finally:
        users.close()


def _pywinrm(client: spnego.ContextProxy) -> Encryption:
    """pywinrm's Encryption over the client context, as requests_ntlm hands it over."""
    auth = SimpleNamespace(session_security=ShimSessionSecurity(client))
    return Encryption(SimpleNamespace(auth=auth), "ntlm")  # type: ignore[arg-type]


def _framing(body: bytes) -> bytes:
    """The body up to the sealed bytes: boundaries, content types and the declared length."""
    head, octets, _ = body.partition(b"application/octet-stream\r\n")
    return head + octets


def _pywinrm_request(client: spnego.ContextProxy, message: bytes) -> tuple[bytes, str]:
    request = _pywinrm(client).prepare_encrypted_request(requests.Session(), URL, message)
    return request.body, request.headers["Content-Type"]


def test_a_request_sealed_by_pywinrm_opens_in_the_lab(pair: tuple) -> None:
    client, server = pair
    body, content_type = _pywinrm_request(client, SOAP.encode("utf-8"))
    assert is_encrypted(content_type)
    assert unseal_request(server.context, body, content_type) == SOAP.encode("utf-8")


def test_a_reply_sealed_by_the_lab_opens_in_pywinrm(pair: tuple) -> None:
    client, server = pair
    reply = SimpleNamespace(
        headers={"Content-Type": REPLY_CONTENT_TYPE},
        content=seal_reply(server.context, SOAP.encode("utf-8")),
        request=SimpleNamespace(url=URL),
    )
    assert _pywinrm(client).parse_encrypted_response(reply) == SOAP.encode("utf-8")


def test_the_lab_frames_a_reply_as_pywinrm_frames_a_request(pair: tuple) -> None:
    client, server = pair
    message = SOAP.encode("utf-8")
    theirs, content_type = _pywinrm_request(client, message)
    ours = seal_reply(server.context, message)
    assert _framing(ours) == _framing(theirs)
    assert len(ours) == len(theirs)
    assert content_type == REPLY_CONTENT_TYPE


def test_messages_open_in_the_order_they_were_sealed(pair: tuple) -> None:
    client, server = pair
    first = _pywinrm_request(client, b"<first/>")
    second = _pywinrm_request(client, b"<second/>")
    assert unseal_request(server.context, *first) == b"<first/>"
    assert unseal_request(server.context, *second) == b"<second/>"


def test_an_altered_request_is_refused(pair: tuple) -> None:
    client, server = pair
    body, content_type = _pywinrm_request(client, SOAP.encode("utf-8"))
    altered = bytearray(body)
    altered[-30] ^= 0x01  # one bit of the sealed message
    with pytest.raises(SealingError, match="could not be unsealed"):
        unseal_request(server.context, bytes(altered), content_type)


def test_a_request_whose_declared_length_is_wrong_is_refused(pair: tuple) -> None:
    client, server = pair
    body, content_type = _pywinrm_request(client, b"<fourteen-by/>")
    body = body.replace(b"Length=14\r\n", b"Length=15\r\n")
    with pytest.raises(SealingError, match="OriginalContent says 15"):
        unseal_request(server.context, body, content_type)


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (b"<plain/>", "application/soap+xml;charset=UTF-8", "expected an encrypted body"),
        (
            b"--Encrypted Boundary\r\nonly one part--Encrypted Boundary--\r\n",
            REPLY_CONTENT_TYPE,
            "expected 2 MIME parts",
        ),
        (b"--Other\r\nx--Other--\r\n", REPLY_CONTENT_TYPE, "open and close with the MIME boundary"),
        (
            b"--Encrypted Boundary\r\n\tContent-Type: application/HTTP-SPNEGO-session-encrypted"
            b"\r\n\tOriginalContent: type=application/soap+xml\r\n--Encrypted Boundary\r\n"
            b"\tContent-Type: application/octet-stream\r\n\x10\x00\x00\x00--Encrypted Boundary--"
            b"\r\n",
            REPLY_CONTENT_TYPE,
            "OriginalContent has no Length",
        ),
    ],
)
def test_what_is_not_a_sealed_body_is_named(
    pair: tuple, body: bytes, content_type: str, error: str
) -> None:
    _, server = pair
    with pytest.raises(SealingError, match=error):
        unseal_request(server.context, body, content_type)


def test_a_wrong_password_is_refused_by_the_acceptor() -> None:
    users = CredentialFile({USER: PASSWORD})
    try:
        client = spnego.client(USER, "not-the-password", protocol="ntlm")
        server = NTLMAcceptor(users)
        challenge = server.step(client.step())
        with pytest.raises(AuthenticationFailed):
            server.step(client.step(challenge))
        assert not server.complete and server.username is None
    finally:
        users.close()
