"""Certificate tooling for a pilot: a CA, site client certificates, headend server certificates.

Keys are ECDSA P-256. A site certificate carries its site id twice, as the subject common
name and as the URI subjectAltName ``urn:vpp:site:<site_id>`` (`vpp_headend.tls.site_of`
reads it), and is good for client authentication only; a server certificate names its
hosts as DNS (or IP) subjectAltNames and is good for server authentication only, so one
cannot stand in for the other. Private keys are written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vpp_protocol.sitefile import ID_PATTERN

from .tls import SITE_URI_PREFIX, fingerprint

CA_CERT = "ca.pem"
CA_KEY = "ca.key"


class CertError(ValueError):
    """A certificate cannot be made as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Issued:
    """Files written for one certificate."""

    cert: Path
    key: Path
    fingerprint: str
    not_after: dt.datetime


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issued(cert_path: Path, key_path: Path, cert: x509.Certificate) -> Issued:
    der = cert.public_bytes(serialization.Encoding.DER)
    return Issued(cert_path, key_path, fingerprint(der), cert.not_valid_after_utc)


def init_ca(directory: Path, *, name: str = "VPP pilot CA", days: int = 3650) -> Issued:
    """A self-signed CA in ``directory`` (``ca.pem``, ``ca.key``); refuses to overwrite."""
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if cert_path.exists() or key_path.exists():
        raise CertError(f"{directory} already holds a CA; use another directory for a new one")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return _issued(cert_path, key_path, cert)


def _read(path: Path) -> bytes:
    """The bytes of ``path``; CertError naming it when it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertError(f"{path}: {(exc.strerror or str(exc)).lower()}") from None


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    for path in (cert_path, key_path):
        if not path.exists():
            raise CertError(
                f"no CA in {directory} ({path} does not exist): "
                f"run `vpp-headend certs init --dir {directory}` first"
            )
    try:
        cert = x509.load_pem_x509_certificate(_read(cert_path))
    except ValueError as exc:
        raise CertError(f"{cert_path} is not a PEM certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(_read(key_path), None)
    except (ValueError, TypeError) as exc:
        raise CertError(f"{key_path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{directory / CA_KEY} is not an EC key")
    return cert, key


def _leaf(
    ca_dir: Path,
    subject_cn: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
    cert_path: Path,
    key_path: Path,
) -> Issued:
    ca_cert, ca_key = _load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return _issued(cert_path, key_path, cert)


def issue_site(
    ca_dir: Path, site_id: str, *, out_dir: Path | None = None, days: int = 825
) -> Issued:
    """A client certificate + key for ``site_id`` (``<out>/<site_id>.pem`` and ``.key``)."""
    if not ID_PATTERN.fullmatch(site_id):
        raise CertError(f"site id {site_id!r} must match [A-Za-z0-9._-]{{1,64}}")
    out = out_dir or ca_dir / "sites"
    return _leaf(
        ca_dir,
        site_id,
        [x509.UniformResourceIdentifier(SITE_URI_PREFIX + site_id)],
        ExtendedKeyUsageOID.CLIENT_AUTH,
        days,
        out / f"{site_id}.pem",
        out / f"{site_id}.key",
    )


def issue_server(
    ca_dir: Path,
    names: list[str],
    *,
    out_dir: Path | None = None,
    basename: str = "server",
    days: int = 825,
) -> Issued:
    """A server certificate for the headend, valid for every DNS name / IP in ``names``."""
    if not names:
        raise CertError("give at least one --name (the host name gateways connect to)")
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    out = out_dir or ca_dir
    return _leaf(
        ca_dir,
        names[0],
        sans,
        ExtendedKeyUsageOID.SERVER_AUTH,
        days,
        out / f"{basename}.pem",
        out / f"{basename}.key",
    )


def cert_fingerprint(path: Path) -> str:
    """The deny-list fingerprint of a PEM certificate file; CertError naming the file."""
    try:
        cert = x509.load_pem_x509_certificate(_read(path))
    except ValueError as exc:
        if isinstance(exc, CertError):
            raise
        raise CertError(f"{path} is not a PEM certificate: {exc}") from None
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


__all__ = [
    "CertError",
    "Issued",
    "cert_fingerprint",
    "init_ca",
    "issue_server",
    "issue_site",
]
