"""Test certificates made with the ``openssl`` CLI: a cluster CA, an unknown CA, a node
certificate (server + client auth, SAN 127.0.0.1/localhost) and a client certificate.

Shared by the TLS tests (test_tls.py, test_launcher.py, test_cli.py): each module makes
its own ``Pki`` in a module-scoped fixture, e.g.::

    @pytest.fixture(scope="module")
    def pki(tmp_path_factory): return Pki(tmp_path_factory.mktemp("pki"))
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lauradb.rpc.channels import TlsSettings

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

EXT = (
    "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth,clientAuth\n"
)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    cert, key = d / f"{name}.pem", d / f"{name}.key"
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )
    return cert, key


def make_leaf(d: Path, name: str, ca: tuple[Path, Path], serial: int) -> tuple[Path, Path]:
    cert, key, csr, ext = (d / f"{name}.{s}" for s in ("pem", "key", "csr", "ext"))
    ext.write_text(EXT)
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
    )
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-set_serial", str(serial), "-days", "2", "-out", str(cert), "-extfile", str(ext),
    )
    return cert, key


class Pki:
    def __init__(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        self.dir = d
        self.ca = make_ca(d, "cluster-ca")
        self.other_ca = make_ca(d, "unknown-ca")
        self.node = make_leaf(d, "node", self.ca, serial=1001)
        self.client = make_leaf(d, "client", self.ca, serial=2001)

    def flags(self, client_auth: str) -> list[str]:
        """The processes' (and the launcher's) --tls-* flags with the node certificate."""
        return [
            "--tls-cert", str(self.node[0]), "--tls-key", str(self.node[1]),
            "--tls-ca", str(self.ca[0]), "--tls-client-auth", client_auth,
        ]

    def client_flags(self, *, with_cert: bool = True) -> list[str]:
        """The admin CLI's --tls-* flags (the client certificate unless ``with_cert``)."""
        flags = ["--tls-ca", str(self.ca[0])]
        if with_cert:
            flags += ["--tls-cert", str(self.client[0]), "--tls-key", str(self.client[1])]
        return flags

    def client_tls(self, *, with_cert: bool = True, ca: Path | None = None) -> TlsSettings:
        cert, key = self.client if with_cert else (None, None)
        return TlsSettings(
            cert=str(cert) if cert else None, key=str(key) if key else None,
            ca=str(ca or self.ca[0]),
        )
