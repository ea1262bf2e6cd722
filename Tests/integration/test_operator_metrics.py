"""Issue 6, GET /metrics: Prometheus text that prometheus_client's own parser reads, served on the Unix
socket and on TCP with the token, whose counters move as requests and refreshes happen."""

from __future__ import annotations

import signal
import time

import pytest
import yaml

from support.harness import error_answer
from support.operator_cli import scrape, value


@pytest.fixture
def credd(fake_imds, start_credd):
    # Poll IMDS every second so refreshes happen while the test watches.
    return start_credd(imds_endpoint=fake_imds.url, imds={"poll_interval": "1s", "attempts": 1, "timeout": "300ms"}).wait_serving()


FAMILIES = {
    "credd_http_requests": "counter",
    "credd_credential_requests": "counter",
    "credd_refreshes": "counter",
    "credd_upstream_latency_seconds": "histogram",
    "credd_credentials_expiry_seconds": "gauge",
    "credd_open_connections": "gauge",
}


def test_metrics_parse_with_prometheus_client_and_have_every_family(credd):
    families, samples = scrape(credd)
    for name, kind in FAMILIES.items():
        assert name in families, f"{name} missing; families: {sorted(families)}"
        assert families[name].type == kind, f"{name} is a {families[name].type}, expected {kind}"
        assert families[name].documentation, f"{name} has no HELP text"
    # The set's credentials last 6 hours (the fake's default): the gauge says so, give or take the test's time.
    expiry = value(samples, "credd_credentials_expiry_seconds", set="default")
    assert 6 * 3600 - 120 < expiry <= 6 * 3600
    assert value(samples, "credd_open_connections") >= 1  # at least this scrape's own connection


def test_metrics_on_tcp_need_the_token(credd):
    reply = credd.get("/metrics", token=None)
    assert reply.status == 401
    assert error_answer(reply)["code"] == "MissingToken"
    assert credd.get("/metrics", token="wrong-token-0123456789").status == 403
    families, _ = scrape(credd, via="tcp")
    assert "credd_http_requests" in families


def test_request_counters_move_with_requests(credd):
    _, before = scrape(credd)
    for _ in range(3):
        assert credd.get("/v1/credentials").status == 200
    assert credd.get("/v1/credentials", token=None).status == 401
    assert credd.get("/v1/credentials/nope").status == 404
    assert credd.get("/nowhere").status == 404
    assert credd.get("/healthz").status == 200
    _, after = scrape(credd)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("credd_http_requests_total", route="credentials", status="200") == 3
    assert moved("credd_http_requests_total", route="credentials", status="401") == 1
    assert moved("credd_http_requests_total", route="credentials", status="404") == 1
    assert moved("credd_http_requests_total", route="other", status="404") == 1
    assert moved("credd_http_requests_total", route="health", status="200") == 1
    # The first scrape itself was answered before the second one was taken.
    assert moved("credd_http_requests_total", route="metrics", status="200") == 1
    assert moved("credd_credential_requests_total", set="default", status="200") == 3
    assert moved("credd_credential_requests_total", set="default", status="401") == 1


def test_refresh_and_failure_counters_and_latency_move(credd, fake_imds):
    _, before = scrape(credd)
    credd.wait_for(lambda: value(scrape(credd)[1], "credd_refreshes_total", set="default", source="imds")
                   >= value(before, "credd_refreshes_total", set="default", source="imds") + 2, 20, "two more IMDS refreshes")
    fake_imds.outage(True, "refuse")
    try:
        credd.wait_for(lambda: value(scrape(credd)[1], "credd_refresh_failures_total", set="default", source="imds",
                                     reason="IMDSUnreachable") >= 1, 20, "a failed refresh to be counted")
    finally:
        fake_imds.outage(False)
    _, after = scrape(credd)
    assert value(after, "credd_upstream_latency_seconds_count", source="imds") > value(
        before, "credd_upstream_latency_seconds_count", source="imds")
    assert value(after, "credd_upstream_latency_seconds_bucket", source="imds", le="+Inf") == value(
        after, "credd_upstream_latency_seconds_count", source="imds")
    # Credentials stay served during the outage (static stability), so the expiry gauge stays positive.
    assert value(after, "credd_credentials_expiry_seconds", set="default") > 0


def test_a_set_added_by_a_reload_gets_its_series(credd):
    config = yaml.safe_load(credd.config_path.read_text())
    config["credentials"]["extra"] = {"source": "imds"}
    credd.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    credd.signal(signal.SIGHUP)
    credd.wait_serving("extra")
    assert credd.get("/v1/credentials/extra").status == 200
    deadline = time.monotonic() + 10
    while True:
        _, samples = scrape(credd)
        if value(samples, "credd_credentials_expiry_seconds", set="extra") > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert value(samples, "credd_credentials_expiry_seconds", set="extra") > 0
    assert value(samples, "credd_credential_requests_total", set="extra", status="200") >= 1
