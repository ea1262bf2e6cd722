"""Issue 2, access: the TCP token, Host and Origin rules (DNS rebinding, browsers), the token file, the error
answers, refusing non-loopback addresses, and a graceful stop."""

from __future__ import annotations

import base64
import json
import signal
import stat
import time

import pytest

from support import register_secret
from support.harness import Credd, credentials_answer, error_answer, free_port, matches_issued


@pytest.fixture
def credd(fake_imds, start_credd):
    return start_credd(imds_endpoint=fake_imds.url).wait_serving()


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "127.0.0.1", "localhost:{port}", "localhost",
                                  "LOCALHOST:{port}", "127.0.0.2:{port}", "[::1]:{port}", "[::1]"])
def test_loopback_host_names_are_accepted(credd, fake_imds, host):
    """awscrt sends Host without the port; any loopback name or address is fine."""
    reply = credd.get("/v1/credentials", host=host.format(port=credd.tcp_port))
    assert matches_issued(credentials_answer(reply), fake_imds.credentials)


@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1.nip.io:{port}",
                                  "localhost.evil.example", "169.254.170.2", "10.0.0.1:{port}", "0.0.0.0:{port}",
                                  "127.0.0.1@evil.example"])
def test_rebinding_host_is_refused_even_with_the_token(credd, host):
    reply = credd.get("/v1/credentials", host=host.format(port=credd.tcp_port))
    assert reply.status == 403, f"Host {host} got {reply.status}"
    error_answer(reply)


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:{port}", "null"])
def test_any_origin_header_is_refused(credd, origin):
    for path in ("/v1/credentials", "/v1/status"):
        reply = credd.get(path, headers={"Origin": origin.format(port=credd.tcp_port)})
        assert reply.status == 403, f"Origin {origin} on {path} got {reply.status}"
        error_answer(reply)


def test_unix_socket_needs_no_token(credd, fake_imds):
    assert matches_issued(credentials_answer(credd.get("/v1/credentials", via="unix")), fake_imds.credentials)


def test_token_file_is_32_random_bytes_base64url_without_newline_mode_0600(credd):
    raw = credd.token_file.read_bytes()
    assert not raw.endswith(b"\n"), "a trailing newline breaks every SDK (PROTOCOLS §1)"
    text = raw.decode("ascii")
    assert "=" not in text and "+" not in text and "/" not in text
    assert len(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))) == 32
    assert stat.S_IMODE(credd.token_file.stat().st_mode) == 0o600


def test_an_existing_token_file_is_used_as_it_is(fake_imds, credd_bin, tmp_path):
    d = Credd(credd_bin, tmp_path / "c", imds_endpoint=fake_imds.url)
    chosen = "preexisting-token-" + base64.urlsafe_b64encode(b"x" * 24).decode().rstrip("=")
    register_secret(chosen, "credd auth token")
    d.token_file.write_text(chosen)
    d.token_file.chmod(0o600)
    try:
        d.start().wait_serving()
        assert d.token_file.read_text() == chosen
        assert credentials_answer(d.get("/v1/credentials", token=chosen))
    finally:
        d.stop()


def test_two_daemons_get_different_tokens(fake_imds, start_credd):
    a = start_credd(name="a", imds_endpoint=fake_imds.url)
    b = start_credd(name="b", imds_endpoint=fake_imds.url)
    assert a.token() != b.token()
    assert b.get("/v1/credentials", token=a.token()).status == 403


@pytest.mark.parametrize("method,path,status", [
    ("POST", "/v1/credentials", 405), ("PUT", "/v1/credentials", 405), ("DELETE", "/v1/credentials", 405),
    ("GET", "/nope", 404), ("GET", "/latest/meta-data/", 404), ("GET", "/v1/credentials/a/b", 404),
])
def test_error_answers_are_json_with_the_fitting_status(credd, method, path, status):
    reply = credd.get(path, method=method)
    assert reply.status == status
    error_answer(reply)


def test_oversized_headers_are_431(credd):
    # 40 KB: far above any real client's headers, small enough that credd reads it all before answering
    # (so the 431 is not lost to a reset).
    reply = credd.get("/v1/credentials", headers={"X-Padding": "a" * 40000})
    assert reply.status == 431


@pytest.mark.parametrize("address", ["0.0.0.0:{port}", "[::]:{port}", "192.0.2.10:{port}"])
def test_non_loopback_tcp_address_is_refused_at_start(fake_imds, credd_bin, tmp_path, address):
    port = free_port()
    bad = address.format(port=port)
    d = Credd(credd_bin, tmp_path / "c", imds_endpoint=fake_imds.url, listen={"tcp": [bad]})
    d.start(wait=False)
    try:
        d.process.wait(15)
    except Exception:
        pytest.fail(f"credd started with tcp: [{bad}] instead of refusing it")
    finally:
        d.stop()
    assert d.process.returncode != 0
    assert bad.split(":")[0].strip("[]") in d.logs(), "the error names the address"


def test_sigterm_stops_credd_gracefully(credd):
    assert credd.get("/healthz", token=None).status in (200, 503)
    started = time.monotonic()
    assert credd.stop() == 0
    assert time.monotonic() - started < 10


def test_sigint_stops_credd_gracefully(credd):
    credd.signal(signal.SIGINT)
    assert credd.process.wait(10) == 0


def test_status_route_has_no_secret_and_names_the_sets(credd):
    from support import SECRETS

    reply = credd.get("/v1/status")
    assert reply.status == 200
    assert SECRETS.find(reply.body) == []
    assert "default" in json.dumps(json.loads(reply.body))
