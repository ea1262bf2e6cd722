"""Issue 5, configuration of assume-role sets: `credd config check` (and `credd serve`) refuse cycles, an
unknown `from`, a missing region and the global STS endpoint without the explicit flag, each with a message
that names the key; valid chains pass. Nothing here talks to STS."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from support import redact

CONFIG_ERROR = 78  # EX_CONFIG
ROLE = "arn:aws:iam::123456789012:role/deploy"


def _config(tmp_path: Path, credentials: dict) -> Path:
    doc = {
        "listen": {"unix": {"path": str(tmp_path / "credd.sock")}, "tcp": [], "token_file": str(tmp_path / "token")},
        "imds": {"endpoint": "http://127.0.0.1:9"},
        "credentials": credentials,
    }
    path = tmp_path / "credd.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _check(credd_bin: Path, config: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {"PATH": "/usr/bin:/bin", "HOME": str(config.parent), "LANG": "C.UTF-8"}
    full_env.update(env or {})
    return subprocess.run([str(credd_bin), "config", "check", "--config", str(config)], env=full_env,
                          capture_output=True, timeout=30, stdin=subprocess.DEVNULL)


def _output(proc: subprocess.CompletedProcess) -> str:
    return redact((proc.stdout + proc.stderr).decode(errors="replace"))


def _role(**extra) -> dict:
    cfg = {"source": "assume-role", "from": "default", "role_arn": ROLE, "region": "eu-west-1"}
    cfg.update(extra)
    return cfg


BAD = {
    "cycle": ({"default": {"source": "imds"}, "a": _role(**{"from": "b"}), "b": _role(**{"from": "a"})},
              ["credentials.", "cycle", "a", "b"]),
    "self-cycle": ({"default": {"source": "imds"}, "a": _role(**{"from": "a"})}, ["credentials.a", "cycle"]),
    "unknown from": ({"default": {"source": "imds"}, "deploy": _role(**{"from": "nope"})},
                     ["credentials.deploy.from", "nope"]),
    "missing region": ({"default": {"source": "imds"},
                        "deploy": {k: v for k, v in _role().items() if k != "region"}},
                       ["credentials.deploy", "region"]),
    "global endpoint without the flag": ({"default": {"source": "imds"},
                                          "deploy": _role(endpoint="https://sts.amazonaws.com")},
                                         ["credentials.deploy.endpoint", "version 1", "allow_global_endpoint"]),
    "missing role_arn": ({"default": {"source": "imds"}, "deploy": {k: v for k, v in _role().items() if k != "role_arn"}},
                         ["credentials.deploy", "role_arn"]),
    "duration under 15 minutes": ({"default": {"source": "imds"}, "deploy": _role(duration="10m")},
                                  ["credentials.deploy.duration"]),
    "invalid session name": ({"default": {"source": "imds"}, "deploy": _role(role_session_name="has space")},
                             ["credentials.deploy.role_session_name"]),
    "policy that is not JSON": ({"default": {"source": "imds"}, "deploy": _role(policy="{not json")},
                                ["credentials.deploy.policy"]),
    "unknown key": ({"default": {"source": "imds"}, "deploy": _role(rol_arn=ROLE)}, ["rol_arn"]),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_config_check_refuses(credd_bin, tmp_path, case):
    credentials, says = BAD[case]
    proc = _check(credd_bin, _config(tmp_path, credentials))
    out = _output(proc)
    assert proc.returncode == CONFIG_ERROR, f"exit {proc.returncode}, expected {CONFIG_ERROR}:\n{out}"
    for fragment in says:
        assert fragment in out, f"the message should contain {fragment!r}:\n{out}"


def test_serve_refuses_a_cycle_without_starting(credd_bin, tmp_path):
    config = _config(tmp_path, BAD["cycle"][0])
    proc = subprocess.run([str(credd_bin), "serve", "--config", str(config)],
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, capture_output=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == CONFIG_ERROR, _output(proc)
    assert "cycle" in _output(proc)
    assert not (tmp_path / "credd.sock").exists()


def test_global_endpoint_from_the_environment_is_refused_too(credd_bin, tmp_path):
    """AWS_ENDPOINT_URL_STS is where the SDKs take an STS endpoint from; the global one needs the flag there too."""
    config = _config(tmp_path, {"default": {"source": "imds"}, "deploy": _role()})
    proc = _check(credd_bin, config, env={"AWS_ENDPOINT_URL_STS": "https://sts.amazonaws.com"})
    out = _output(proc)
    assert proc.returncode == CONFIG_ERROR, f"exit {proc.returncode}:\n{out}"
    assert "AWS_ENDPOINT_URL_STS" in out and "version 1" in out, out


def test_plain_http_endpoint_off_loopback_is_refused(credd_bin, tmp_path):
    """The source session token travels in a header: never in clear beyond this machine."""
    config = _config(tmp_path, {"default": {"source": "imds"}, "deploy": _role(endpoint="http://sts.example.com")})
    proc = _check(credd_bin, config)
    assert proc.returncode == CONFIG_ERROR, _output(proc)
    assert "https" in _output(proc)


def test_global_endpoint_with_the_flag_passes_with_a_warning(credd_bin, tmp_path):
    config = _config(tmp_path, {"default": {"source": "imds"},
                                "deploy": _role(endpoint="https://sts.amazonaws.com", allow_global_endpoint=True,
                                                region="us-east-1")})
    proc = _check(credd_bin, config)
    out = _output(proc)
    assert proc.returncode == 0, out
    assert "version 1" in out, f"config check should warn about version 1 tokens:\n{out}"


def test_valid_chains_pass_and_show_their_chain(credd_bin, tmp_path):
    config = _config(tmp_path, {
        "default": {"source": "imds"},
        "ops": _role(external_id="ext-1", duration="1h", source_identity="alice"),
        "deploy": _role(**{"from": "ops"}, role_session_name="credd-deploy", endpoint="http://127.0.0.1:4566"),
    })
    proc = _check(credd_bin, config)
    out = _output(proc)
    assert proc.returncode == 0, out
    assert "deploy" in out and "ops" in out and "default" in out


def test_policy_file_is_read(credd_bin, tmp_path):
    policy = tmp_path / "session-policy.json"
    policy.write_text('{"Version": "2012-10-17", "Statement": []}\n')
    good = _check(credd_bin, _config(tmp_path, {"default": {"source": "imds"}, "deploy": _role(policy_file=str(policy))}))
    assert good.returncode == 0, _output(good)
    policy.write_text("not json")
    bad = _check(credd_bin, _config(tmp_path, {"default": {"source": "imds"}, "deploy": _role(policy_file=str(policy))}))
    assert bad.returncode == CONFIG_ERROR, _output(bad)
    assert "policy" in _output(bad)
