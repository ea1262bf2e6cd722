"""Issue 8, the answer path: a request repeated byte for byte on a kept-alive connection is not decoded again
(credd remembers what it made of the last request sent alone in one read). These tests hold it to being only
a cache: every repeat is answered exactly as the decoder would have it, on both listeners, and bytes that
merely look like the remembered request but do not start at a message boundary go through the decoder.
"""

from __future__ import annotations

import signal
import socket
import time

import pytest
import yaml

from support import register_secret
from support.fake_imds import FakeIMDS
from support.faults_net import parse_answers, targets_of
from support.harness import Credd, observe


@pytest.fixture(scope="module")
def served(credd_bin, tmp_path_factory):
    work = tmp_path_factory.mktemp("repeat")
    fake = FakeIMDS(secret_sink=register_secret).start()
    credd = Credd(credd_bin, work / "credd", imds_endpoint=fake.url,
                  extra_config={"server": {"header_timeout": "2s"}})
    try:
        credd.start().wait_serving()
        yield credd
    finally:
        credd.stop()
        fake.stop()


@pytest.fixture(params=["tcp", "unix"])
def target(request, served):
    return {t.kind: t for t in targets_of(served)}[request.param]


class Conversation:
    """One kept-alive connection: send bytes, read exactly the answers they ask for."""

    def __init__(self, target) -> None:
        self.sock = target.connect(timeout=5)
        self.pending = b""

    def ask(self, data: bytes, answers: int = 1, methods=None, wait: float = 3.0):
        self.sock.sendall(data)
        deadline = time.monotonic() + wait
        raw = self.pending
        while time.monotonic() < deadline:
            parsed = parse_answers(raw, methods=methods)
            if len(parsed) >= answers:
                break
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                self.closed = True
                break
            raw += chunk
        parsed = parse_answers(raw, methods=methods)
        self.pending = b""
        return parsed

    def is_closed(self, wait: float = 1.0) -> bool:
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def test_a_repeated_request_gets_the_answer_the_decoder_would_give(target):
    c = Conversation(target)
    try:
        first = c.ask(target.request())
        assert [a.status for a in first] == [200]
        for _ in range(200):
            again = c.ask(target.request())
            assert [a.status for a in again] == [200] and again[0].body == first[0].body
        # Something else on the same connection is decoded and answered as itself; then the first again.
        health = c.ask(target.request(target="/healthz"))
        assert health[0].status == 200 and b'"status":"ok"' in health[0].body
        for _ in range(3):
            nope = c.ask(target.request(target="/v1/credentials/nope"))
            assert [(a.status, a.code) for a in nope] == [(404, "UnknownSet")]
        head = c.ask(target.request(method="HEAD"), methods=["HEAD"])
        assert head[0].status == 200 and head[0].body == b""
        head = c.ask(target.request(method="HEAD"), methods=["HEAD"])
        assert head[0].status == 200 and head[0].body == b""
        assert c.ask(target.request())[0].body == first[0].body
        assert not c.is_closed(0.2)
    finally:
        c.close()


def test_the_same_bytes_in_the_middle_of_a_message_are_not_taken_for_the_request(target):
    c = Conversation(target)
    try:
        assert c.ask(target.request())[0].status == 200
        assert c.ask(target.request())[0].status == 200  # remembered by now
        # Half a request line, then the remembered bytes: to the decoder they are header lines of the first
        # (a request line is not a header), so the answer is 400 and the connection closes.
        c.sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(0.2)
        answers = c.ask(target.request())
        assert [(a.status, a.code) for a in answers] == [(400, "MalformedRequest")]
        assert c.is_closed()
    finally:
        c.close()


def test_a_request_split_across_reads_and_pipelined_repeats_are_each_answered(target):
    c = Conversation(target)
    try:
        request = target.request()
        assert c.ask(request)[0].status == 200
        assert c.ask(request)[0].status == 200
        # The remembered request in two pieces: neither piece is the request.
        c.sock.sendall(request[:10])
        time.sleep(0.2)
        assert [a.status for a in c.ask(request[10:])] == [200]
        # Three at once: one read holding three requests, answered three times, in order.
        three = c.ask(request + target.request(target="/v1/credentials/nope") + request, answers=3)
        assert [a.status for a in three] == [200, 404, 200]
        assert c.ask(request)[0].status == 200
    finally:
        c.close()


def test_a_remembered_request_is_checked_against_the_access_rules_of_now(fake_imds, start_credd, tmp_path):
    """The repeat is decoded once, but who may have the credentials is decided on every request: a reload
    that gives the set its own token refuses the very next repeat (with the old token) on the same connection."""
    credd = start_credd(imds_endpoint=fake_imds.url)
    credd.wait_serving()
    tcp = {t.kind: t for t in targets_of(credd)}["tcp"]
    c = Conversation(tcp)
    try:
        for _ in range(3):
            assert c.ask(tcp.request())[0].status == 200
        own = tmp_path / "default.token"
        own.write_text("a-token-only-for-the-default-set-0123456789")
        own.chmod(0o600)
        register_secret(own.read_text())
        cfg = yaml.safe_load(credd.config_path.read_text())
        cfg["credentials"]["default"]["access"] = {"token_file": str(own)}
        credd.config_path.write_text(yaml.safe_dump(cfg))
        credd.signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        statuses = []
        answers = []
        while time.monotonic() < deadline:
            answers = c.ask(tcp.request())
            statuses.append(answers[0].status if answers else None)
            if statuses[-1] != 200:
                break
            time.sleep(0.1)
        assert statuses[-1] == 403, f"the repeated request was still answered after the reload: {statuses[-5:]}"
        assert answers[0].code == "WrongToken"
    finally:
        c.close()


def test_every_repeat_is_audited_with_its_own_second_and_answer(fake_imds, start_credd):
    """The audit line of a repeat is reused only within the same second and for the same answer: each of the
    repeats gets its own line, the lines carry the second they were answered in, and a different answer on
    the same connection (a refusal) gets its own line."""
    credd = start_credd(imds_endpoint=fake_imds.url)
    credd.wait_serving()
    tcp = {t.kind: t for t in targets_of(credd)}["tcp"]
    key = observe(credd).key
    c = Conversation(tcp)
    port = c.sock.getsockname()[1]
    sent = 0
    try:
        started = time.time()
        while time.time() - started < 2.5:
            assert c.ask(tcp.request())[0].status == 200
            sent += 1
            time.sleep(0.01)
        wrong = tcp.request().replace(tcp.token.encode(), b"x" * len(tcp.token))
        refused = c.ask(wrong)
        assert refused[0].status == 403
    finally:
        c.close()

    def audited() -> list[str]:
        return [l for l in credd.logs().splitlines() if "credential request" in l and f":{port} " in l]

    credd.wait_for(lambda: len(audited()) >= sent + 1, 10, "the audit lines")  # written at the end of a loop tick
    lines = audited()
    ok = [l for l in lines if "credd.status=200" in l]
    no = [l for l in lines if "credd.status=403" in l]
    assert len(ok) == sent and len(no) == 1, f"{len(ok)} lines for {sent} answers, {len(no)} for the refusal"
    assert all(f"credd.key=\u2026{key[-4:]}" in l for l in ok)
    assert "credd.key=" not in no[0]
    seconds = [l.split(" ", 1)[0] for l in ok]
    assert len(set(seconds)) >= 2, "lines over 2.5 s carry more than one second"
    assert seconds == sorted(seconds), "the seconds go forward line after line"
