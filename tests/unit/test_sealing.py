"""WinRM message encryption: the engine's and the lab's framing against pywinrm's own.

Both ends of the lab's wire seal with :mod:`cmrunbook.remote.winrm.sealing`, so a mistake there
shared by the engine and the lab and never show in an end-to-end test. pywinrm's ``Encryption``
class is the reference here: it is what has talked to real Windows hosts for years.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import requests
import spnego
from requests_ntlm.requests_ntlm import ShimSessionSecurity
from winrm.encryption import Encryption

from cmrunbook.remote.winrm.sealing import ENCRYPTED_CONTENT_TYPE, EncryptionError, seal, unseal
from cmrunbook_lab.ntlm import CredentialFile, NTLMAcceptor

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


def test_a_request_sealed_by_pywinrm_opens_in_the_lab(pair: tuple) -> None:
    client, server = pair
    request = _pywinrm(client).prepare_encrypted_request(
        requests.Session(), URL, SOAP.encode("utf-8")
    )
    assert unseal(server.context, request.body, request.headers["Content-Type"]) == (
        SOAP.encode("utf-8")
    )


def test_the_engine_seals_a_request_exactly_as_pywinrm_frames_it(pair: tuple) -> None:
    client, server = pair
    message = SOAP.encode("utf-8")
    theirs = _pywinrm(client).prepare_encrypted_request(requests.Session(), URL, message)
    ours = seal(client, message)
    assert _framing(ours) == _framing(theirs.body)
    assert len(ours) == len(theirs.body)
    assert theirs.headers["Content-Type"] == ENCRYPTED_CONTENT_TYPE
    # sealed in this order, opened in this order (RC4 stream and sequence numbers)
    assert unseal(server.context, theirs.body, ENCRYPTED_CONTENT_TYPE) == message
    assert unseal(server.context, ours, ENCRYPTED_CONTENT_TYPE) == message


def test_a_reply_sealed_by_the_lab_opens_in_pywinrm(pair: tuple) -> None:
    client, server = pair
    reply = SimpleNamespace(
        headers={"Content-Type": ENCRYPTED_CONTENT_TYPE},
        content=seal(server.context, SOAP.encode("utf-8")),
        request=SimpleNamespace(url=URL),
    )
    assert _pywinrm(client).parse_encrypted_response(reply) == SOAP.encode("utf-8")


def test_an_altered_body_is_refused(pair: tuple) -> None:
    client, server = pair
    body = bytearray(seal(client, SOAP.encode("utf-8")))
    body[-30] ^= 0x01  # one bit of the sealed message
    with pytest.raises(EncryptionError, match="could not be unsealed"):
        unseal(server.context, bytes(body), ENCRYPTED_CONTENT_TYPE)


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (b"<plain/>", "application/soap+xml;charset=UTF-8", "expected an encrypted body"),
        (b"--Encrypted Boundary\r\nonly one part", ENCRYPTED_CONTENT_TYPE, "expected 2 MIME"),
    ],
)
def test_what_is_not_a_sealed_body_is_named(
    pair: tuple, body: bytes, content_type: str, error: str
) -> None:
    _, server = pair
    with pytest.raises(EncryptionError, match=error):
        unseal(server.context, body, content_type)
