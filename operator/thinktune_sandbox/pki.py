"""Certificates for the local test control plane.

Like kwokctl, one CA and one admin key pair serve every role: apiserver serving cert, client cert of every
component (O=system:masters bypasses RBAC), front-proxy client, and service-account token signing key. That is
fine for a throwaway cluster bound to 127.0.0.1 and keeps start-up to a single RSA key generation pair.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

CA_COMMON_NAME = "thinktune-sandbox-ca"
ADMIN_USER = "thinktune-admin"
ADMIN_GROUP = "system:masters"
# First IP of the default service CIDR (10.96.0.0/12): in-cluster clients reach the apiserver as this address.
SERVICE_IP = "10.96.0.1"
DNS_SANS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
IP_SANS = ("127.0.0.1", "::1", SERVICE_IP)
VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class PkiFiles:
    ca_cert: Path
    admin_cert: Path
    admin_key: Path

    def exist(self) -> bool:
        return self.ca_cert.is_file() and self.admin_cert.is_file() and self.admin_key.is_file()


def pki_files(directory: Path) -> PkiFiles:
    return PkiFiles(directory / "ca.crt", directory / "admin.crt", directory / "admin.key")


def _new_key() -> rsa.RSAPrivateKey:
    from cryptography.hazmat.primitives.asymmetric import rsa

    # RSA rather than ECDSA: every component (and the SA token signer) accepts it without extra flags.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_pki(directory: Path) -> PkiFiles:
    """Create the CA and admin cert in `directory` unless they already exist; returns their paths."""
    files = pki_files(directory)
    if files.exist():
        return files
    # Imported here, not at module top: `thinktune sandbox status/down` and the main CLI's start-up should
    # not pay for (or require) cryptography, which only the operator extra installs.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    # Backdated so that small clock differences between processes never make the cert "not yet valid".
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)

    ca_key = _new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    admin_key = _new_key()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in DNS_SANS]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in IP_SANS]
    admin_cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ADMIN_GROUP),
                    x509.NameAttribute(NameOID.COMMON_NAME, ADMIN_USER),
                ]
            )
        )
        .issuer_name(ca_name)
        .public_key(admin_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    _write_cert(files.ca_cert, ca_cert)
    _write_cert(files.admin_cert, admin_cert)
    # The key last: exist() only reports True once everything is on disk.
    _write_key(files.admin_key, admin_key)
    return files
