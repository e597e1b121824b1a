"""A throwaway certificate authority that issues server certificates for 127.0.0.1 and ::1 and client
certificates, for TLS upstreams and for the mirror's own HTTPS listener (renewals, mTLS). `certificate`
is the one builder."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA certificate clients trust, and the server's certificate and key."""

    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    ips: tuple[str, ...] = (),
    usages: tuple[x509.ObjectIdentifier, ...] = (),
    days: int = 7,
) -> x509.Certificate:
    """A certificate for `subject`'s `key`, signed by `signer` in the name of `issuer`: a CA's (`ca`),
    or a leaf's with IP SANs (`ips`) and extended key usages (`usages`), valid from yesterday on."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(_CA_USAGE, critical=True).add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    if ips:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]),
            critical=False,
        )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


class TestCa:
    """A CA (EC P-256) whose certificate is at `ca`; `issue` signs leaf certificates with it."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "mirror test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.name = directory, name
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.cert = certificate(name, self._key, name, self._key, ca=True)
        self.ca = directory / "ca.pem"
        self.ca.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, common_name: str = "127.0.0.1", *, client: bool = False) -> KeyPair:
        """A leaf certificate: for a server, for 127.0.0.1 and ::1 (IP SANs, serverAuth); for a client
        (clientAuth) with `common_name` as its subject. Written to `<stem>.pem` and `<stem>.key` in the
        CA's directory."""
        key = ec.generate_private_key(ec.SECP256R1())
        if client:
            cert = certificate(
                common_name, key, self.name, self._key, usages=(ExtendedKeyUsageOID.CLIENT_AUTH,)
            )
        else:
            usages = (ExtendedKeyUsageOID.SERVER_AUTH,)
            cert = certificate(
                common_name, key, self.name, self._key, ips=("127.0.0.1", "::1"), usages=usages
            )
        pair = KeyPair(self.directory / f"{stem}.pem", self.directory / f"{stem}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pair.key.write_bytes(_pem_key(key))
        return pair


def make_tls(directory: Path, ca_name: str = "mirror test CA") -> TlsFiles:
    """A new CA, and a certificate it signed for 127.0.0.1 (IP SAN, serverAuth), written to `directory`."""
    ca = TestCa(directory, ca_name)
    server = ca.issue("server")
    return TlsFiles(ca.ca, server.cert, server.key)


def fingerprint(pem: bytes) -> str:
    """sha256 of a PEM (or DER) certificate, as the mirror logs it (`sha256:<hex>`)."""
    pem_text = pem.startswith(b"-----")
    cert = x509.load_pem_x509_certificate(pem) if pem_text else x509.load_der_x509_certificate(pem)
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()
