"""The in-pod progress patch (runner.reporter.InClusterPatcher) against a local HTTPS server
with the pod's files (token, CA): patches share one kept-alive connection, each carries the
token as it is on disk now, and a connection the server dropped is replaced once."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from runner.reporter import InClusterPatcher


class Api(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.patches: list[tuple[str, str, dict[str, Any]]] = []
        self.answer = 200
        self.close_after_answer = False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the API server speaks
    server: Api

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.patches.append((self.path, self.headers["Authorization"], body))
        answer = json.dumps({"message": "refused by policy"}).encode()
        self.send_response(self.server.answer)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        if self.server.close_after_answer:
            self.close_connection = True

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Api, Path]]:
    """The server and a service-account directory whose CA signed its certificate."""
    sa = tmp_path / "sa"
    sa.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(sa / "ca.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    (sa / "token").write_text("first\n")
    server = Api()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(sa / "ca.crt", tmp_path / "key.pem")
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, sa
    server.shutdown()
    server.server_close()


def patcher(server: Api, sa: Path) -> InClusterPatcher:
    port = str(server.server_address[1])
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}
    return InClusterPatcher(env, directory=sa)


def body(stage: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {"audiojob.dev/stage": stage}}}


def test_patches_share_one_connection_and_read_the_token_each_time(
    api: tuple[Api, Path],
) -> None:
    server, sa = api
    p = patcher(server, sa)
    p.patch_namespaced_pod("pod-1", "ns", body("fetching"))
    (sa / "token").write_text("rotated\n")  # the kubelet rotates the projected token in place
    p.patch_namespaced_pod("pod-1", "ns", body("rendering"))
    assert server.connections == 1 and p.connections == 1
    assert server.patches == [
        ("/api/v1/namespaces/ns/pods/pod-1", "Bearer first", body("fetching")),
        ("/api/v1/namespaces/ns/pods/pod-1", "Bearer rotated", body("rendering")),
    ]

    # The server closes the connection after an answer (as an API server may, idle or
    # restarting): the next patch goes out once on a new one, not as an error.
    server.close_after_answer = True
    p.patch_namespaced_pod("pod-1", "ns", body("storing"))
    server.close_after_answer = False
    p.patch_namespaced_pod("pod-1", "ns", body("done"))
    assert [b["metadata"]["annotations"]["audiojob.dev/stage"] for _, _, b in server.patches] == [
        "fetching",
        "rendering",
        "storing",
        "done",
    ]
    assert server.connections == 2
    p.close()


def test_a_refused_patch_says_what_the_api_said(api: tuple[Api, Path]) -> None:
    server, sa = api
    server.answer = 403
    with pytest.raises(OSError, match=r"HTTP 403 patching pod pod-1: .*refused by policy"):
        patcher(server, sa).patch_namespaced_pod("pod-1", "ns", body("x"))
