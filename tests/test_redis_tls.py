"""cohort.redis over TLS: ``rediss://`` URLs against a real redis-server started with TLS on
loopback, with a throwaway CA and server certificate made in a temporary directory."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _redis_server import MISSING
from cohort.redis import Coordinator

pytest.importorskip("cryptography", reason="the TLS tests make certificates with the "
                    "cryptography package: pip install cryptography")  # fmt: skip
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NO_TLS = "this redis-server was built without TLS (BUILD_TLS=yes): the rediss:// tests skip"


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))  # fmt: skip


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signed for 127.0.0.1 and localhost: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer: str, public: ec.EllipticCurvePublicKey, signer:
              ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:  # fmt: skip
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("cohort test CA", "cohort test CA", ca_key.public_key(), ca_key, True)
    cert = build("127.0.0.1", "cohort test CA", key.public_key(), ca_key, False)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, paths[2])
    return paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tls_ping(port: int, context: ssl.SSLContext) -> bool:
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as s,
        ):
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A redis-server that speaks only TLS, on loopback: (port, CA file)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(MISSING)
    directory = tmp_path_factory.mktemp("redis-tls")
    ca, cert, key = make_certificates(directory)
    context = ssl.create_default_context(cafile=str(ca))
    port = _free_port()
    log = directory / "redis.log"
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--logfile", str(log)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not _tls_ping(port, context):
            if process.poll() is not None:
                assert process.stderr is not None
                said = process.stderr.read().decode(errors="replace")
                if "TLS" in said or "tls" in said:
                    pytest.skip(NO_TLS)
                pytest.fail(f"the TLS redis-server exited: {said[-500:]}")
            if time.monotonic() > deadline:
                pytest.fail("the TLS redis-server did not answer in 10 s")
            time.sleep(0.01)
        yield port, ca
    finally:
        process.kill()
        process.wait()
        if process.stderr is not None:
            process.stderr.close()


async def test_a_rediss_url_with_the_ca_in_its_query_coordinates_over_tls(
    tls_server: tuple[int, Path], namespace: str
) -> None:
    port, ca = tls_server
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    async with (
        Coordinator(url, namespace=namespace, lease=5, poll=0.05) as one,
        Coordinator(url, namespace=namespace, lease=5, poll=0.05) as two,
    ):
        async with one.lock("db") as first:
            pass
        async with two.lock("db") as second:
            assert second.token > first.token
        flags = one.event_flags("f", "go")
        await two.event_flags("f", "go").set("go")  # the wake-up comes over TLS too
        assert await flags.wait_all("go") == {"go"}


async def test_an_ssl_context_argument_is_used_for_a_rediss_url(
    tls_server: tuple[int, Path], namespace: str
) -> None:
    port, ca = tls_server
    context = ssl.create_default_context(cafile=str(ca))
    async with (
        Coordinator(f"rediss://localhost:{port}/0", namespace=namespace, ssl=context) as coord,
        coord.lock("db") as lease,
    ):
        assert lease.token > 0


async def test_a_server_certificate_from_an_unknown_ca_is_refused(
    tls_server: tuple[int, Path], namespace: str
) -> None:
    port, _ = tls_server
    url = f"rediss://127.0.0.1:{port}/0"  # the system's CAs: they never signed the test CA
    with pytest.raises(ssl.SSLCertVerificationError):
        async with Coordinator(url, namespace=namespace, unreachable=0.5):
            pass


def test_bad_tls_arguments_raise_at_the_call_site() -> None:
    context = ssl.create_default_context()
    with pytest.raises(ValueError, match="ssl= is for rediss:// URLs"):
        Coordinator("redis://127.0.0.1:6379/0", namespace="x", ssl=context)
    with pytest.raises(TypeError, match=r"ssl\.SSLContext"):
        Coordinator("rediss://127.0.0.1:6379/0", namespace="x", ssl=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ssl_cert_reqs must be none, optional or required"):
        Coordinator("rediss://127.0.0.1:6379/0?ssl_cert_reqs=maybe", namespace="x")
