"""Issue 7, secrets: the suite-wide scan covers logs, CLI and status output, every HTTP answer the harness
reads (error bodies, health, status, metrics: installed here for the whole session) and pytest's captured
output; these tests prove each of those paths fails a run when a secret shows up, naming the kind and
never printing the secret.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support import SECRETS, faults_secretscan
from support.harness import REPO_ROOT

# Installed at collection, so every test of the session (collected before any runs) is covered.
ANSWERS = faults_secretscan.install()

LEAKY_TESTS = textwrap.dedent('''
    """Tests that leak on purpose, run in a child pytest by test_secrets_scan.py."""
    from support import register_secret, watch_for_secrets

    SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYLEAKYTESTKEY"

    def test_printed(capsys):
        register_secret(SECRET, "planted secret key")
        print("the key is", SECRET)

    def test_in_a_log(tmp_path):
        register_secret(SECRET, "planted secret key")
        log = watch_for_secrets(tmp_path / "daemon.log", "a daemon log")
        log.write_text("refreshed key " + SECRET[:20] + "\\n")

    def test_in_an_assertion():
        register_secret(SECRET, "planted secret key")
        assert SECRET == "something else"

    def test_clean():
        register_secret(SECRET, "planted secret key")
        print("nothing to see")
''')


def _child_suite(tmp_path: Path) -> Path:
    """A copy of this suite's conftest and support package beside the leaky tests."""
    here = Path(__file__).parent
    root = tmp_path / "suite"
    root.mkdir()
    shutil.copy(here / "conftest.py", root / "conftest.py")
    shutil.copy(here / "pytest.ini", root / "pytest.ini")
    shutil.copytree(here / "support", root / "support", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "test_leaky.py").write_text(LEAKY_TESTS)
    (tmp_path / "Package.swift").write_text("// marks the copy's root for support.harness\n")
    return root


def test_the_scan_fails_the_run_on_a_leak_and_never_prints_the_secret(tmp_path):
    root = _child_suite(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-c", str(root / "pytest.ini"), str(root), "-p", "no:randomly"],
                          cwd=root, capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={"PATH": "/usr/bin:/bin", "CREDD_BIN": "/nonexistent", "HOME": str(tmp_path)})
    out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    (tmp_path / "child-output.txt").write_text(out)
    assert proc.returncode != 0, "a run with leaks must fail"
    assert "wJalrXUtnFEMI/K7MDENG/bPxRfiCYLEAKYTESTKEY" not in out and "wJalrXUtnFEMI" not in out, \
        "the scan's own report must not print the secret"
    assert "planted secret key" in out
    assert "LEAK:" in out
    assert "in 'Captured stdout call'" in out, "captured output is scanned"
    assert "a daemon log" in out, "watched files are scanned, fragments included"
    assert "in the failure report" in out, "assertion messages are scanned"
    assert "test_clean PASSED" in out or "1 passed" in out.replace(", ", "\n") or "passed" in out


def test_error_bodies_status_and_metrics_read_through_the_harness_are_scanned(fake_imds, start_credd):
    credd = start_credd(imds_endpoint=fake_imds.url)
    credd.wait_serving()
    size = ANSWERS.stat().st_size if ANSWERS.exists() else 0
    assert credd.get("/v1/credentials/nope").status == 404
    assert credd.get("/v1/status").status == 200
    assert credd.get("/healthz").status == 200
    credd.get("/metrics")  # 404 until metrics are wired; scanned either way
    assert credd.get("/v1/credentials", token="wrong-token-wrong-token").status == 403
    assert credd.get("/v1/credentials").status == 200
    recorded = ANSWERS.read_bytes()[size:]
    for path in (b"/v1/credentials/nope -> 404", b"/v1/status -> 200", b"/healthz -> 200", b"/metrics ->",
                 b"/v1/credentials -> 403"):
        assert path in recorded, path
    assert b"SecretAccessKey" not in recorded, "a credentials answer holds secrets on purpose and is not recorded"
    assert SECRETS.find(recorded) == []
    # The file is one the scan watches: a planted secret there is found.
    assert str(ANSWERS) in json.dumps([str(p) for p in SECRETS._watched])


def test_what_the_scan_knows_covers_every_kind_of_test_secret(fake_imds, start_credd):
    """The fakes register what they issue (IMDS keys and tokens, the IMDS API token) and the harness credd's
    auth token: the forms the scan looks for include each kind."""
    credd = start_credd(imds_endpoint=fake_imds.url)
    credd.wait_serving()
    labels = set(SECRETS._secrets.values())
    for kind in ("IMDS secret access key", "IMDS session token", "IMDS API token", "credd auth token"):
        assert kind in labels, f"{kind} is not registered with the scan"
