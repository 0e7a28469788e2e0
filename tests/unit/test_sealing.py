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

from cmrunbook.remote.winrm.sealing import (
    ENCRYPTED_CONTENT_TYPE,
    EncryptionError,
    NtlmSeal,
    SpnegoSeal,
    seal,
    sealer,
    unseal,
)

DOMAIN, USER, PASSWORD = "LAB", "labadmin", "S3cret-pa55!"
URL = "http://127.0.0.1:5985/wsman"
SOAP = '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">Grüße</s:Envelope>'


def handshake() -> tuple[spnego.ContextProxy, spnego.ContextProxy]:
    """A client context and an acceptor after a complete NTLM handshake."""
    client = spnego.client(f"{DOMAIN}\\{USER}", PASSWORD, protocol="ntlm")
    server = spnego.server(protocol="ntlm")
    challenge = server.step(client.step())
    assert server.step(client.step(challenge)) is None
    assert server.complete and client.complete
    return client, server


@pytest.fixture
def users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ntlm-users.txt"
    path.write_text(f"{DOMAIN}:{USER}:{PASSWORD}\n", encoding="utf-8")
    monkeypatch.setenv("NTLM_USER_FILE", str(path))


@pytest.fixture
def pair(users: None) -> Iterator[tuple[spnego.ContextProxy, spnego.ContextProxy]]:
    yield handshake()


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
    other_client, _ = handshake()
    theirs = _pywinrm(other_client).prepare_encrypted_request(requests.Session(), URL, message)
    ours = seal(sealer(client), message)
    assert _framing(ours) == _framing(theirs.body)
    assert len(ours) == len(theirs.body)
    assert theirs.headers["Content-Type"] == ENCRYPTED_CONTENT_TYPE
    assert unseal(sealer(server), ours, ENCRYPTED_CONTENT_TYPE) == message


def test_the_engine_seal_is_pyspnego_s_both_ways_message_after_message(pair: tuple) -> None:
    """NtlmSeal against pyspnego's own wrap and unwrap as the peer: the sequence numbers and
    RC4 streams advance alike over several messages in each direction."""
    client, server = pair
    ours = sealer(client)
    assert isinstance(ours, NtlmSeal)
    for n in range(3):
        request = f"{SOAP} request {n}".encode()
        assert server.unwrap(ours.wrap(request)).data == request  # pyspnego verifies ours
        reply = f"{SOAP} reply {n}".encode() * (n + 1)
        assert ours.unwrap(server.wrap(reply, encrypt=True).data) == reply


def test_a_reply_sealed_as_pywinrm_would_opens_in_the_engine(pair: tuple) -> None:
    client, server = pair
    # pywinrm seals requests only; the acceptor's reply uses the same framing, byte for byte
    reply = _pywinrm(server).prepare_encrypted_request(requests.Session(), URL, SOAP.encode())
    assert unseal(sealer(client), reply.body, reply.headers["Content-Type"]) == SOAP.encode()


@pytest.mark.parametrize("spot", [-30, -60, 40])
@pytest.mark.parametrize("opener", [sealer, SpnegoSeal], ids=["engine", "pyspnego"])
def test_an_altered_body_is_refused(pair: tuple, spot: int, opener: type) -> None:
    """One bit flipped in the sealed message, the checksum or the sequence number."""
    client, server = pair
    body = bytearray(seal(SpnegoSeal(client), SOAP.encode("utf-8")))
    octets = body.index(b"application/octet-stream\r\n") + 26 + 4  # after the length prefix
    body[spot if spot < 0 else octets + spot // 10] ^= 0x01
    with pytest.raises(EncryptionError, match="could not be unsealed"):
        unseal(opener(server), bytes(body), ENCRYPTED_CONTENT_TYPE)


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
        unseal(sealer(client), body, content_type)
