"""Fixtures for credd's integration tests, and the session-wide scan for leaked test secrets."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from support import SECRETS, redact, register_secret
from support.fake_imds import FakeIMDS
from support.harness import Credd, MotoSTS, credd_binary, raise_file_limit
from support import faults_secretscan

# Every HTTP answer credd gives through the harness (errors, health, status, metrics) is scanned for secrets too.
faults_secretscan.install()

_findings_at_end: list[str] = []
_leaks_key = pytest.StashKey[set]()


# ---- a clean, loopback-only process environment -----------------------------------------------------

def pytest_configure(config):
    # No AWS_* setting of this machine (AWS_CA_BUNDLE is set here) may reach a client created in-process,
    # no proxy may carry a loopback request elsewhere, and nothing may fall through to a real IMDS.
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del os.environ[name]
    aws_dir = Path(tempfile.mkdtemp(prefix="credd-it-aws-"))
    (aws_dir / "config").write_text("")
    (aws_dir / "credentials").write_text("")
    os.environ["AWS_CONFIG_FILE"] = str(aws_dir / "config")
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(aws_dir / "credentials")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    os.environ["NO_PROXY"] = "127.0.0.1,localhost,::1"
    raise_file_limit()


def _secret_sink(value: str, label: str) -> None:
    register_secret(value, label)


# ---- fixtures ----------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def credd_bin() -> Path:
    """The credd binary under test: $CREDD_BIN, else .build/debug/credd in this checkout."""
    path = credd_binary()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"The credd binary {path} is missing: run `swift build` in the checkout (or set CREDD_BIN).",
                    pytrace=False)
    return path


@pytest.fixture
def make_fake_imds():
    """Start strict IMDSv2 fakes: make_fake_imds(role=..., lifetime=..., host='::1', ...)."""
    fakes: list[FakeIMDS] = []

    def make(**kwargs) -> FakeIMDS:
        kwargs.setdefault("secret_sink", _secret_sink)
        fake = FakeIMDS(**kwargs).start()
        fakes.append(fake)
        return fake

    yield make
    for fake in fakes:
        fake.stop()


@pytest.fixture
def fake_imds(make_fake_imds) -> FakeIMDS:
    """One strict IMDSv2 fake on 127.0.0.1 with 6-hour credentials for the role credd-fake-role."""
    return make_fake_imds()


@pytest.fixture
def start_credd(credd_bin, tmp_path):
    """Start real credd daemons: start_credd(imds_endpoint=fake.url, imds={...}, credentials={...}, ...).
    Every daemon is stopped at the end of the test."""
    daemons: list[Credd] = []

    def start(name: str = "credd", wait: bool = True, **kwargs) -> Credd:
        d = Credd(credd_bin, tmp_path / name, name=name, **kwargs)
        daemons.append(d)
        d.start(wait=wait)
        return d

    yield start
    for d in daemons:
        d.stop()


@pytest.fixture(scope="session")
def moto_sts():
    """moto's STS and IAM on loopback with SigV4 checking on, plus a role to issue credentials for."""
    moto = MotoSTS().start()
    yield moto
    moto.stop()


# ---- the secret scan ---------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_secret_in_watched_files():
    """After each test: no registered secret in any watched file (credd logs, status and CLI output)."""
    yield
    findings = SECRETS.scan_watched()
    if findings:
        pytest.fail("Test secrets leaked:\n  " + "\n  ".join(findings), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    leaks = []
    sections = []
    for title, content in report.sections:
        found = SECRETS.find(content)
        if found:
            leaks.append(f"{', '.join(found)} in '{title}'")
            content = redact(content)
        sections.append((title, content))
    report.sections = sections
    if report.longrepr is not None:
        text = str(report.longrepr)
        found = SECRETS.find(text)
        if found:
            leaks.append(f"{', '.join(found)} in the failure report")
            report.longrepr = redact(text)
    # Later phases repeat the sections of earlier ones: report each leak once, on the first phase showing it.
    seen = item.stash.setdefault(_leaks_key, set())
    new = [leak for leak in leaks if leak not in seen]
    seen.update(new)
    if new:
        note = "Test secrets leaked into pytest's output (redacted above): " + "; ".join(new)
        report.outcome = "failed"
        report.longrepr = (str(report.longrepr) + "\n" if report.longrepr else "") + note
        _findings_at_end.append(f"{item.nodeid}: {note}")


def pytest_sessionfinish(session, exitstatus):
    findings = SECRETS.scan_watched(only_new=False)
    _findings_at_end.extend(findings)
    if findings:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    terminalreporter.section("secret scan")
    if _findings_at_end:
        for line in _findings_at_end:
            terminalreporter.write_line("LEAK: " + line, red=True)
    else:
        terminalreporter.write_line(
            f"no leak: {SECRETS.count} forms of registered test secrets, none in logs, CLI output or test output")
