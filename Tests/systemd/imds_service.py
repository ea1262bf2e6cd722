"""The strict IMDSv2 fake as a service inside the nspawn container, plus a control port for ci_check.py.

    imds_service.py --port 1338 --control-port 1339

Control (loopback, JSON): GET /state gives the upstream call counters and the current credentials' key id
and SHA-256 digests of its secret parts (never the secrets); POST /redact with any text answers which test
secrets it holds (labels) and the text with them replaced, so the checks can scan journald output for
secrets and save it without ever printing one.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from support import SecretRegistry  # noqa: E402
from support.fake_imds import FakeIMDS  # noqa: E402


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    args = parser.parse_args()

    registry = SecretRegistry()
    fake = FakeIMDS(port=args.port, secret_sink=registry.register).start()

    class Control(http.server.BaseHTTPRequestHandler):
        def log_message(self, format, *a):  # noqa: A002
            pass

        def _answer(self, document: dict) -> None:
            body = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            creds = fake.credentials
            self._answer({
                "credential_gets": fake.credential_gets,
                "token_puts": fake.token_puts,
                "access_key_id": creds.access_key_id,
                "secret_sha256": _sha256(creds.secret_access_key),
                "token_sha256": _sha256(creds.token),
                "expiration": creds.expiration_text,
            })

        def do_POST(self):
            text = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode("utf-8", "replace")
            self._answer({"labels": registry.find(text), "text": registry.redact(text)})

    control = http.server.ThreadingHTTPServer(("127.0.0.1", args.control_port), Control)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=control.shutdown).start())
    print(f"fake IMDS on {fake.url}, control on 127.0.0.1:{args.control_port}", flush=True)
    control.serve_forever()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
