"""Property-based API fuzzing: schemathesis (v4) drives the running app from
docs/openapi.yaml and finds no 5xx and no response that breaks the documented schema,
status codes, content types or headers. Bounded (few examples per operation, fixed seed).
Every operation except plugin enable/disable is fuzzed (see the note below).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT, ToruServer

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed")
def test_schemathesis_against_running_app(short_home, example_plugins, test_output):
    server = ToruServer(
        short_home,
        plugins=[example_plugins["hello-python"]],
        enable=["hello-python"],
        env={"TORU_LOGIN_RATE": "3", "TORU_HTTP_TIMEOUT": "3", "TORU_SHUTDOWN_GRACE": "2"},
    )
    with server:
        cookie, csrf = server.login()
        status, token = server.json(
            "POST", "/api/auth/tokens", {"name": "fuzz"}, cookie=cookie, csrf=csrf
        )
        assert status == 201
        report = test_output / "schemathesis"
        shutil.rmtree(report, ignore_errors=True)
        cp = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                str(ROOT / "docs" / "openapi.yaml"),
                "--url",
                server.url,
                "-H",
                f"Authorization: Bearer {token['token']}",
                "--max-examples",
                "5",
                "--phases",
                "examples,coverage,fuzzing",
                "--checks",
                CHECKS,
                # NOTE: enable/disable are left out: the fuzzer toggling the plugin under its
                # own concurrent requests produces the documented transitional 502/503s that
                # not_a_server_error counts as failures. test_e2e_api covers both endpoints.
                "--exclude-path-regex",
                "/(enable|disable)$",
                "--request-timeout",
                "20",
                "--seed",
                "1",
                "--workers",
                "2",
                "--no-color",
                "--report",
                "junit",
                "--report-dir",
                str(report),
            ],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert cp.returncode == 0, cp.stdout[-8000:] + cp.stderr[-2000:]
        # and the app logged no unhandled exception while being fuzzed
        assert "unhandled error" not in server.output()
