"""`trajforge serve --tls-cert --tls-key` (seed 003: "TLS + token auth required"): the proxy answers HTTPS only, the
client SDK verifies the certificate it is given, plain HTTP gets no answer; half a pair or a missing file is refused
before any Ray starts, and so is --direct-ingress, whose replica ports would bypass the TLS."""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import free_port, open_session, steps
from test_serve_cli import REPO, _kill_tree, _start

from trajforge.client import IngestClient


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (a test CA of one): (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trajforge-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.slow
def test_the_services_answer_https_only_and_the_client_verifies_the_certificate(tmp_path):
    cert, key = self_signed(tmp_path)
    port = free_port()
    process, printed = _start(tmp_path / "lake", port, "--apps", "ingest", "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert any(f"https://127.0.0.1:{port}" in line for line in printed), "".join(printed)
        with IngestClient(f"https://127.0.0.1:{port}", verify=str(cert), max_retries=0) as client:
            session = open_session(client)
            assert session.send_chunk(steps(6))["status"] == 200
            assert session.close({"status": "SUCCESS"})["status"] == 200
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # not trusted without the certificate
            httpx.get(f"https://127.0.0.1:{port}/health", timeout=10)
        with pytest.raises(httpx.HTTPError):  # plain HTTP gets no HTTP answer on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
    finally:
        _kill_tree(process)


@pytest.mark.parametrize(("flags", "said"), [
    (["--tls-cert", "CERT"], "ssl_certfile and ssl_keyfile go together (--tls-cert and --tls-key)"),
    (["--tls-cert", "CERT", "--tls-key", "/nonexistent/key.pem"], "ssl_keyfile /nonexistent/key.pem is not a file here"),
    (["--tls-cert", "CERT", "--tls-key", "KEY", "--direct-ingress"], "--direct-ingress answers plain HTTP on the replicas' own ports"),
    # these started Ray and Serve, whose proxy then failed on them
    (["--tls-cert", "GARBAGE", "--tls-key", "GARBAGE"], "do not load as a PEM certificate and its private key"),
    (["--tls-cert", "CERT", "--tls-key", "OTHER_KEY"], "do not load as a PEM certificate and its private key"),
])
def test_a_tls_setting_that_cannot_work_is_refused_before_ray_starts(tmp_path, flags, said):
    cert, key = self_signed(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(bytes(range(256)))
    named = {"CERT": cert, "KEY": key, "OTHER_KEY": self_signed(other)[1], "GARBAGE": garbage}
    argv = [str(named.get(flag, flag)) for flag in flags]
    done = subprocess.run([sys.executable, "-m", "trajforge", "serve", "--port", str(free_port()), *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": "local"})
    assert done.returncode == 2 and said in done.stderr, done.stderr[-2000:]
    assert "Ray: starting" not in done.stdout
