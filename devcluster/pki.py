"""The local cluster's PKI with openssl: a CA, serving and client certificates, kubeconfigs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(pki: Path) -> None:
    """A CA, the apiserver's serving cert, its client cert for kubelets, a front-proxy client
    cert and the SA signing key."""
    pki.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=audiojob-test-ca",
        cwd=pki,
    )
    sans = (
        "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
        "DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"
    )
    sign_cert(
        pki,
        "apiserver",
        subject="/CN=kube-apiserver",
        extensions=f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n",
    )
    sign_cert(pki, "front-proxy-client", subject="/CN=front-proxy-client")
    # What the apiserver shows a real kubelet for `kubectl logs` and `exec`.
    sign_cert(pki, "apiserver-kubelet-client", subject="/O=system:masters/CN=kube-apiserver")
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def sign_cert(
    pki: Path,
    name: str,
    *,
    subject: str,
    extensions: str = "extendedKeyUsage=clientAuth\n",
    out_dir: Path | None = None,
) -> None:
    """A key and a certificate for `subject` signed by the CA in `pki`, written as
    `<name>.key`/`<name>.crt` into `out_dir` (default `pki`)."""
    out = out_dir or pki
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.ext").write_text(extensions)
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        "-subj",
        subject,
        cwd=out,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        str(pki / "ca.crt"),
        "-CAkey",
        str(pki / "ca.key"),
        "-CAcreateserial",
        "-CAserial",
        str(pki / "ca.srl"),
        "-days",
        "3650",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
        cwd=out,
    )


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_file: Path,
    token: str = "",
    user: str = "user",
    client_cert: tuple[Path, Path] | None = None,
) -> None:
    """A kubeconfig authenticating with a bearer token, or with `client_cert` (cert, key)."""
    credentials: dict[str, str] = {"token": token}
    if client_cert:
        credentials = {
            "client-certificate": str(client_cert[0]),
            "client-key": str(client_cert[1]),
        }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "audiojob",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "audiojob", "context": {"cluster": "audiojob", "user": user}}],
        "current-context": "audiojob",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
