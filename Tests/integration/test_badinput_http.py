"""Issue 7, bad input: hostile and broken HTTP on BOTH listeners (loopback TCP with its token, the Unix
socket), sent as exact bytes. Every case names what a client sees: status, stable error code, and whether
credd closes the connection. After each hostile input credd must still answer a good request.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time

import pytest

from support import redact, register_secret, watch_for_secrets
from support.fake_imds import FakeIMDS
from support.faults_net import exchange, one_answer, parse_answers, record_bodies, targets_of
from support.harness import Credd

HEADER_TIMEOUT = 1.0  # server.header_timeout in these tests (the minimum credd accepts is 100 ms)


@pytest.fixture(scope="module")
def served(credd_bin, tmp_path_factory):
    """One credd for the module, serving a fake's credentials with a short header timeout; every raw answer
    but a credentials one goes to a secret-scanned file."""
    work = tmp_path_factory.mktemp("badinput")
    record_bodies(work / "raw-answers.log")
    fake = FakeIMDS(secret_sink=register_secret).start()
    credd = Credd(credd_bin, work / "credd", imds_endpoint=fake.url,
                  extra_config={"server": {"header_timeout": f"{int(HEADER_TIMEOUT * 1000)}ms"}})
    try:
        credd.start().wait_serving()
        yield credd
    finally:
        credd.stop()
        fake.stop()


@pytest.fixture(params=["tcp", "unix"])
def target(request, served):
    return {t.kind: t for t in targets_of(served)}[request.param]


def still_serves(target) -> None:
    answer, _ = one_answer(target, target.request(), wait=2)
    assert answer is not None and answer.status == 200, f"credd stopped serving on {target.kind}: {answer}"


def padded(t, total: int) -> bytes:
    """A good request whose head counts `total` bytes as credd counts them: the target + 16, and each header's
    name and value + 4 (an X-Pad header makes up the difference)."""
    base = len("/v1/credentials") + 16 + len("Host") + len(t.host) + 4
    if t.token is not None:
        base += len("Authorization") + len(t.token) + 4
    pad = total - base - (len("X-Pad") + 4)
    return t.request(extra=b"X-Pad: " + b"a" * pad + b"\r\n")


def bad_utf8_line(t) -> bytes:
    return b"GET /v1/credentials/\xff\xfe\xc0\xaf HTTP/1.1\r\nHost: " + t.host.encode() + b"\r\n" + t.auth_line() + b"\r\n"


# name → (request bytes built from the target, status, code, credd closes the connection)
CASES = {
    "HTTP/0.9 simple request": (lambda t: b"GET /v1/credentials\r\n\r\n", 400, "MalformedRequest", True),
    "not HTTP at all": (lambda t: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
                        400, "MalformedRequest", True),
    "garbage request line": (lambda t: b"GARBAGE\r\n\r\n", 400, "MalformedRequest", True),
    "unknown HTTP version": (lambda t: t.request(version="HTTP/9.9"), 400, "MalformedRequest", True),
    "bare LF line ends": (lambda t: t.request().replace(b"\r\n", b"\n"), 400, "MalformedRequest", True),
    "space before the colon": (lambda t: t.request(extra=b"X-A : b\r\n"), 400, "MalformedRequest", True),
    "obsolete line folding": (lambda t: t.request(extra=b"X-A: b\r\n c\r\n"), 400, "MalformedRequest", True),
    "NUL in the target": (lambda t: t.request(target="/v1/credentials/a\x00b"), 400, "MalformedRequest", True),
    "invalid UTF-8 in the set name": (bad_utf8_line, 400, "MalformedRequest", True),
    "headers of 8 KiB + 1": (lambda t: padded(t, 8 * 1024 + 1), 431, "HeadersTooLarge", True),
    "one 90 KB header": (lambda t: t.request(extra=b"X-Pad: " + b"a" * 90_000 + b"\r\n"), 431, "HeadersTooLarge", True),
    "90 headers of 100 bytes": (lambda t: t.request(extra=b"".join(b"X-%d: %s\r\n" % (i, b"a" * 100) for i in range(90))),
                                431, "HeadersTooLarge", True),
    "a body on GET": (lambda t: t.request(extra=b"Content-Length: 5\r\n") + b"hello", 400, "UnexpectedBody", True),
    "a chunked body on GET": (lambda t: t.request(extra=b"Transfer-Encoding: chunked\r\n") + b"5\r\nhello\r\n0\r\n\r\n",
                              400, "UnexpectedBody", True),
    "Content-Length and Transfer-Encoding": (
        lambda t: t.request(extra=b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n") + b"0\r\n\r\n",
        400, "MalformedRequest", True),
    "duplicate Host": (lambda t: t.request(extra=b"Host: localhost\r\n"), 400, "DuplicateHeader", True),
    "duplicate Authorization": (lambda t: t.request(extra=b"Authorization: x\r\nAuthorization: y\r\n"),
                                400, "DuplicateHeader", True),
    "absolute-form target": (lambda t: t.request(target="http://127.0.0.1/v1/credentials"), 400, "BadTarget", True),
    "CONNECT authority-form": (lambda t: b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n",
                               400, "BadTarget", True),
    "OPTIONS *": (lambda t: b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "BadTarget", True),
    "path traversal": (lambda t: t.request(target="/v1/credentials/../../etc/passwd"), 404, "UnknownSet", False),
    "encoded traversal": (lambda t: t.request(target="/v1/credentials/%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
                          404, "UnknownSet", False),
    "percent-encoded set name": (lambda t: t.request(target="/v1/credentials/%64efault"), 404, "UnknownSet", False),
    "broken percent-encoding": (lambda t: t.request(target="/v1/credentials/%zz%"), 404, "UnknownSet", False),
    "unknown set": (lambda t: t.request(target="/v1/credentials/nope"), 404, "UnknownSet", False),
    "unknown path": (lambda t: t.request(target="/latest/meta-data/iam/security-credentials/"), 404, "NotFound", False),
    "POST": (lambda t: t.request(method="POST"), 405, "MethodNotAllowed", False),
    "PUT": (lambda t: t.request(method="PUT"), 405, "MethodNotAllowed", False),
    "DELETE": (lambda t: t.request(method="DELETE", target="/v1/credentials/default"), 405, "MethodNotAllowed", False),
    "TRACE": (lambda t: t.request(method="TRACE"), 405, "MethodNotAllowed", False),
    "a DNS-rebinding Host": (lambda t: t.request(host="attacker.example.com"), 403, "ForbiddenHost", False),
    "a rebinding Host with a loopback-looking name": (lambda t: t.request(host="127.0.0.1.nip.io"), 403,
                                                      "ForbiddenHost", False),
    "an Origin header": (lambda t: t.request(extra=b"Origin: http://localhost\r\n"), 403, "ForbiddenOrigin", False),
    "Origin: null": (lambda t: t.request(extra=b"Origin: null\r\n"), 403, "ForbiddenOrigin", False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request_gets_its_answer_on_both_listeners(target, case):
    """The bad request, then a good one pipelined behind it: a refusal that keeps the connection answers both
    (the second 200), one that closes it answers only the first."""
    build, status, code, closes = CASES[case]
    raw, closed = exchange(target, build(target) + target.request(), wait=2, answers=2)
    answers = parse_answers(raw)
    assert answers, f"{case} on {target.kind}: no HTTP answer ({len(raw)} bytes, closed={closed})"
    first = answers[0]
    assert (first.status, first.code) == (status, code), f"{case} on {target.kind}"
    assert first.headers.get("content-type") == "application/json"
    doc = json.loads(first.body)
    assert isinstance(doc.get("message"), str) and doc["message"].endswith((".", ")")), doc
    if closes:
        assert closed and len(answers) == 1, f"{case} on {target.kind}: credd should close the connection"
        assert first.headers.get("connection", "").lower() == "close"
    else:
        assert [a.status for a in answers] == [status, 200], f"{case} on {target.kind}: keep-alive after {status}"
    if status == 405:
        assert first.headers.get("allow") == "GET, HEAD"
    still_serves(target)


def test_headers_of_exactly_8_kib_are_accepted(target):
    answer, _ = one_answer(target, padded(target, 8 * 1024))
    assert answer is not None and answer.status == 200


def test_pipelined_requests_are_answered_in_order(target):
    data = (target.request() + target.request(target="/v1/credentials/nope") + target.request(target="/healthz")
            + target.request(method="HEAD") + target.request())
    methods = ["GET", "GET", "GET", "HEAD", "GET"]
    raw, closed = exchange(target, data, wait=2, answers=5, methods=methods)
    answers = parse_answers(raw, methods=methods)
    assert [a.status for a in answers] == [200, 404, 200, 200, 200]
    assert answers[3].body == b"" and int(answers[3].headers["content-length"]) == len(answers[4].body)
    assert not closed


def test_pipelined_request_after_a_bad_one_is_not_run(target):
    data = target.request() + b"BAD\r\n\r\n" + target.request()
    raw, closed = exchange(target, data, wait=2)
    assert [(a.status, a.code) for a in parse_answers(raw)] == [(200, None), (400, "MalformedRequest")]
    assert closed


def test_a_client_that_pipelines_without_reading_is_throttled_not_buffered(target, served):
    """Backpressure: credd stops reading a peer whose answers it cannot send, so its memory stays flat."""
    def rss_kb() -> int:
        for line in open(f"/proc/{served.process.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    before = rss_kb()
    s = target.connect(timeout=5)
    s.settimeout(0.5)
    chunk = target.request() * 200
    sent = 0
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            s.sendall(chunk)
            sent += 200
    except socket.timeout:
        pass  # credd stopped reading: the kernel buffers filled up
    finally:
        still_serves(target)  # other clients are served meanwhile
        grown = rss_kb() - before
        s.close()
    assert sent < 200_000, f"credd read {sent} pipelined requests without their answers being read"
    assert grown < 20_000, f"credd grew by {grown} KiB for one peer that does not read"


def test_slowloris_head_is_cut_at_the_header_timeout(target):
    """One byte every 200 ms: the connection is closed once the head has taken HEADER_TIMEOUT, with no answer."""
    s = target.connect(timeout=5)
    started = time.monotonic()
    cut_after = None
    try:
        for byte in target.request():
            s.send(bytes([byte]))
            time.sleep(0.2)
            if time.monotonic() - started > HEADER_TIMEOUT + 3:
                break
    except (BrokenPipeError, ConnectionResetError):
        cut_after = time.monotonic() - started
    finally:
        s.close()
    assert cut_after is not None, "credd kept a head that dripped in for longer than header_timeout"
    assert HEADER_TIMEOUT - 0.1 <= cut_after <= HEADER_TIMEOUT + 1.0, cut_after
    still_serves(target)


def test_a_connection_that_never_sends_is_closed_at_the_header_timeout(target):
    s = target.connect(timeout=HEADER_TIMEOUT + 3)
    started = time.monotonic()
    try:
        assert s.recv(1) == b""
    except ConnectionResetError:
        pass
    finally:
        s.close()
    assert time.monotonic() - started <= HEADER_TIMEOUT + 1.0


def test_idle_keep_alive_connection_is_not_cut_by_the_header_timeout(target):
    """The header timeout measures a head in progress, not the pause between requests on a kept connection."""
    s = target.connect(timeout=5)
    try:
        s.sendall(target.request())
        time.sleep(0.3)
        s.recv(65536)
        time.sleep(HEADER_TIMEOUT + 0.5)
        s.sendall(target.request())
        s.settimeout(2)
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        s.close()


@pytest.mark.skipif(shutil.which("slowhttptest") is None, reason="skipped: slowhttptest is not installed (apt-get install slowhttptest)")
def test_slowhttptest_slow_headers_are_closed_within_the_header_timeout(served, tmp_path):
    """slowhttptest's slowloris mode (TCP only: it speaks no Unix sockets) against credd's TCP listener: every
    connection is closed by credd within the header timeout, and credd keeps answering meanwhile."""
    out = tmp_path / "slowloris"
    proc = subprocess.Popen(
        ["slowhttptest", "-H", "-c", "200", "-r", "100", "-i", "1", "-l", "8", "-x", "24", "-p", "3",
         "-u", f"{served.tcp_url}/v1/credentials", "-g", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    worst = 0.0
    try:
        deadline = time.monotonic() + 12
        while proc.poll() is None and time.monotonic() < deadline:
            t = time.monotonic()
            assert served.get("/v1/credentials").status == 200
            worst = max(worst, time.monotonic() - t)
            time.sleep(0.2)
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = output.decode(errors="replace")
    (tmp_path / "slowhttptest.txt").write_text(text)
    watch_for_secrets(tmp_path / "slowhttptest.txt", "slowhttptest output")
    csv = (tmp_path / "slowloris.csv").read_text().strip().splitlines()
    # Columns: seconds, closed, pending, connected, service available.
    rows = [line.split(",") for line in csv[1:]]
    connected = [int(r[3]) for r in rows]
    assert max(connected) > 50, f"slowhttptest never held many connections: {connected}"
    # Connections live at most the header timeout (+1 s of sampling): the connected count never piles up
    # to what 100 new connections a second for several seconds would reach without it.
    assert max(connected) < 100 * (HEADER_TIMEOUT + 1.5), connected
    assert all(r[4].strip().upper() == "YES" or r[4].strip() == "1" or int(r[4] or 0) > 0 for r in rows[1:]), \
        f"slowhttptest saw the service unavailable:\n{redact(text)[-1500:]}"
    assert worst < 0.5, f"a normal client waited {worst:.3f} s during the attack"


# ---- token guessing (TCP) -------------------------------------------------------------------------------

@pytest.fixture
def fresh(fake_imds, start_credd):
    """A daemon of its own: the guess budget is per daemon."""
    return start_credd(imds_endpoint=fake_imds.url).wait_serving()


def test_token_guessing_is_limited_per_peer_and_a_correct_client_is_not_hurt(fresh):
    served = fresh
    tcp = targets_of(served)[0]
    answers = []
    for i in range(40):
        guess = tcp.request().replace(tcp.token.encode(), f"guess-{i:04d}-".encode() + b"x" * 30)
        answer, closed = one_answer(tcp, guess, wait=1)
        assert closed, "a wrong token closes the connection: every guess costs a new one"
        answers.append((answer.status, answer.code))
        # A correct client, interleaved with the guesses, is never limited.
        assert served.get("/v1/credentials").status == 200
    assert answers[0] == (403, "WrongToken")
    limited = [a for a in answers if a == (429, "TooManyWrongTokens")]
    assert len(limited) >= 10, f"no limit on 40 quick wrong tokens: {answers}"
    assert set(answers) <= {(403, "WrongToken"), (429, "TooManyWrongTokens")}
    answer, _ = one_answer(tcp, tcp.request().replace(tcp.token.encode(), b"y" * 43), wait=1)
    assert answer.headers.get("retry-after", "").isdigit()
    # One log line for the lockout, not one per guess; and no guess in the log.
    lines = [ln for ln in served.logs().splitlines() if "too many wrong Authorization tokens" in ln]
    assert 1 <= len(lines) <= 2, len(lines)
    assert "guess-00" not in served.logs()
    # The budget refills: after a pause a wrong token is a plain 403 again.
    time.sleep(2.5)
    answer, _ = one_answer(tcp, tcp.request().replace(tcp.token.encode(), b"z" * 43), wait=1)
    assert (answer.status, answer.code) == (403, "WrongToken")


def test_many_guessers_in_parallel_do_not_stop_a_correct_client(fresh):
    served = fresh
    tcp = targets_of(served)[0]
    stop = threading.Event()
    counts = {"answers": 0}

    def guesser():
        bad = tcp.request().replace(tcp.token.encode(), b"w" * 43)
        while not stop.is_set():
            try:
                exchange(tcp, bad, wait=0.3)
                counts["answers"] += 1
            except OSError:
                pass

    threads = [threading.Thread(target=guesser, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        worst = 0.0
        for _ in range(30):
            t0 = time.monotonic()
            assert served.get("/v1/credentials").status == 200
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert counts["answers"] > 30
    assert worst < 0.5, f"a correct client waited {worst:.3f} s while 8 guessers ran"
