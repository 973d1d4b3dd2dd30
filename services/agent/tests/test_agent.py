"""The agent's tests, run by `cargo xtask test` inside the `local` image (the Python that ships),
with the project certificates mounted at /certs: routes in-process, then the real server over TLS."""

import http.client
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slipway_common import CertPaths, client_context
from starlette.testclient import TestClient

from agent.app import app

CERTS = Path(os.environ.get("CERTS_DIR", "/certs"))


def test_routes() -> None:
    client = TestClient(app)
    health = client.get("/health").json()
    assert health == {"status": "ok", "service": "agent", "environment": os.environ.get("ENVIRONMENT", "unset")}
    assert client.get("/api/echo", params={"msg": "hi"}).json() == {"echo": "hi"}
    assert client.post("/api/echo", json={"a": 1}).json() == {"echo": {"a": 1}}
    assert client.post("/api/echo", content=b"not json").status_code == 400
    assert client.get("/nope").status_code == 404


def test_no_upstream_without_upstream_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPSTREAM_URL", raising=False)
    response = TestClient(app).get("/api/upstream/hello")
    assert response.status_code == 404
    assert "no upstream" in response.json()["error"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, dict[str, str]]]:
    assert (CERTS / "agent.crt").is_file(), f"the project certificates must be mounted at {CERTS}"
    port = free_port()
    env = dict(os.environ, AGENT_LISTEN=f"127.0.0.1:{port}", CERTS_DIR=str(CERTS), ROOT_CA=str(CERTS / "rootCA.crt"))
    env.pop("AGENT_RELOAD", None)
    env.pop("DEBUGPY_PORT", None)
    proc = subprocess.Popen([sys.executable, "-m", "agent"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        output = proc.stdout.read().decode() if proc.stdout else ""
        pytest.fail(f"the agent did not listen: {output}")
    yield port, env
    proc.terminate()
    proc.wait(timeout=5)


def get(port: int, context: ssl.SSLContext, path: str = "/health") -> tuple[int, str]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read().decode()


def test_a_client_certificate_is_accepted(server: tuple[int, dict[str, str]]) -> None:
    port, _ = server
    # Its own client certificate: every service that requires one has one.
    own = client_context(CertPaths(service="agent", certs_dir=CERTS, root_ca=CERTS / "rootCA.crt"))
    status, body = get(port, own, "/api/hello")
    assert status == 200 and "hello" in body


def assert_refused(port: int, context: ssl.SSLContext) -> None:
    """The server refuses the connection, whichever way the refusal reaches the client (a
    TLS alert, a reset, a broken pipe, a closed connection: it depends on timing and on the
    TLS stack); only a request that is served fails the test."""
    try:
        # TLS 1.3: the refusal arrives with the first read, so a request is made.
        status, body = get(port, context)
    except (OSError, http.client.HTTPException):
        return
    pytest.fail(f"the request was served ({status}): {body}")


def test_no_client_certificate_is_refused(server: tuple[int, dict[str, str]]) -> None:
    port, _ = server
    assert_refused(port, ssl.create_default_context(cafile=str(CERTS / "rootCA.crt")))


def test_a_server_certificate_cannot_be_a_client(server: tuple[int, dict[str, str]]) -> None:
    port, _ = server
    context = ssl.create_default_context(cafile=str(CERTS / "rootCA.crt"))
    context.load_cert_chain(str(CERTS / "agent.crt"), str(CERTS / "agent.key"))
    assert_refused(port, context)


def test_the_healthcheck_passes(server: tuple[int, dict[str, str]]) -> None:
    _, env = server
    done = subprocess.run(
        [sys.executable, "-m", "agent.healthcheck"], env=env, capture_output=True, text=True, timeout=10
    )
    assert done.returncode == 0, done.stderr
    assert '"status":"ok"' in done.stdout.replace(" ", "")


def test_missing_certificates_stop_the_start_in_one_line() -> None:
    env = dict(os.environ, CERTS_DIR="/nonexistent", ROOT_CA="/nonexistent/rootCA.crt")
    done = subprocess.run([sys.executable, "-m", "agent"], env=env, capture_output=True, text=True, timeout=10)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "/nonexistent/rootCA.crt is missing" in lines[0], done.stderr
