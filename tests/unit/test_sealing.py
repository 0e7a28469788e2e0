"""WinRM message encryption: the engine's framing against pywinrm's own.

pywinrm's ``Encryption`` class is the reference here: it is what has talked to real Windows hosts
for years. The peer is a bare pyspnego NTLM acceptor, so these tests need nothing of the lab (the
lab's own side of the framing is checked in tests/lab/test_lab_sealing.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import spnego
from requests_ntlm.requests_ntlm import ShimSessionSecurity
from winrm.encryption import Encryption

from cmrunbook.remote.winrm.sealing import ENCRYPTED_CONTENT_TYPE, EncryptionError, seal, unseal

DOMAIN, USER, PASSWORD = "LAB", "labadmin", "S3cret-pa55!"
URL = "http://127.0.0.1:5985/wsman"
SOAP = '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">Grüße</s:Envelope>'


@pytest.fixture
def pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[spnego.ContextProxy, spnego.ContextProxy]]:
    """A client context and an acceptor after a complete NTLM handshake."""
    users = tmp_path / "ntlm-users.txt"
    users.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n", encoding="utf-8")
    monkeypatch.setenv("NTLM_USER_FILE", str(users))
    client = spnego.client(f"{DOMAIN}\\{USER}", PASSWORD, protocol="ntlm")
    server = spnego.server(protocol="ntlm")
    challenge = server.step(client.step())
    assert server.step(client.step(challenge)) is None
    assert server.complete and client.complete
    yield client, server


def _pywinrm(client: spnego.ContextProxy) -> Encryption:
    """pywinrm's Encryption over the client context, as requests_ntlm hands it over."""
    auth = SimpleNamespace(session_security=ShimSessionSecurity(client))
    return Encryption(SimpleNamespace(auth=auth), "ntlm")  # type: ignore[arg-type]


def _framing(body: bytes) -> bytes:
    """The body up to the sealed bytes: boundaries, content types and the declared length."""
    head, octets, _ = body.partition(b"application/octet-stream\r\n")
    return head + octets


def test_the_engine_seals_a_request_exactly_as_pywinrm_frames_it(pair: tuple) -> None:
    client, server = pair
    message = SOAP.encode("utf-8")
    theirs = _pywinrm(client).prepare_encrypted_request(requests.Session(), URL, message)
    ours = seal(client, message)
    assert _framing(ours) == _framing(theirs.body)
    assert len(ours) == len(theirs.body)
    assert theirs.headers["Content-Type"] == ENCRYPTED_CONTENT_TYPE
    # sealed in this order, opened in this order (RC4 stream and sequence numbers)
    assert unseal(server, theirs.body, ENCRYPTED_CONTENT_TYPE) == message
    assert unseal(server, ours, ENCRYPTED_CONTENT_TYPE) == message


def test_a_reply_sealed_as_pywinrm_would_opens_in_the_engine(pair: tuple) -> None:
    client, server = pair
    # pywinrm seals requests only; the acceptor's reply uses the same framing, byte for byte
    reply = _pywinrm(server).prepare_encrypted_request(requests.Session(), URL, SOAP.encode())
    assert unseal(client, reply.body, reply.headers["Content-Type"]) == SOAP.encode()


def test_an_altered_body_is_refused(pair: tuple) -> None:
    client, server = pair
    body = bytearray(seal(client, SOAP.encode("utf-8")))
    body[-30] ^= 0x01  # one bit of the sealed message
    with pytest.raises(EncryptionError, match="could not be unsealed"):
        unseal(server, bytes(body), ENCRYPTED_CONTENT_TYPE)


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
    client, _ = pair
    with pytest.raises(EncryptionError, match=error):
        unseal(client, body, content_type)
