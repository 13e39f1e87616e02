"""Mutual TLS for the gRPC port: the server context and the site identity of a peer.

A site certificate names its site in a URI subjectAltName ``urn:vpp:site:<site_id>``
(what `vpp-headend certs issue-site` writes), or, failing that, in its subject common
name. The fingerprint (SHA-256 of the DER certificate, lower-case hex) is what the
revocation deny-list holds.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpp_protocol.sitefile import ID_PATTERN

SITE_URI_PREFIX = "urn:vpp:site:"


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """Who is on the other end of a TLS connection, from its verified certificate."""

    site_id: str | None  # None: the certificate names no valid site id
    fingerprint: str  # sha256 of the DER certificate, lower-case hex
    subject: str  # for logs


class TlsFileError(ValueError):
    """A TLS file cannot be read or loaded; the message names the file."""


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return (exc.strerror or str(exc)).lower()


def server_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """TLS ≥ 1.2, ALPN h2, client certificates required and verified against ``client_ca``.

    ``client_ca`` may hold several CA certificates (a rollover trusts old and new). Reads
    files: call it off the event loop. TlsFileError names the file that is missing or
    does not load (OpenSSL alone says neither which file nor, for a missing one, that).
    """
    for what, path in (("certificate", cert), ("key", key), ("client CA", client_ca)):
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise TlsFileError(f"TLS {what} {path}: {_why(exc)}") from None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    except (OSError, ssl.SSLError) as exc:
        raise TlsFileError(f"TLS client CA {client_ca} does not load: {_why(exc)}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise TlsFileError(
            f"TLS certificate {cert} with key {key} does not load: {_why(exc)}"
        ) from None
    ctx.set_alpn_protocols(["h2"])
    return ctx


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, lower-case hex without separators."""
    return hashlib.sha256(der).hexdigest()


def normalize_fingerprint(text: str) -> str | None:
    """``AB:CD:...`` or ``abcd...`` → 64 lower-case hex digits; None when it is not one."""
    fp = text.strip().replace(":", "").lower()
    if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
        return None
    return fp


def site_of(cert: dict[str, Any]) -> str | None:
    """The site id a verified peer certificate (``getpeercert()`` form) names, or None."""
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI" and str(value).startswith(SITE_URI_PREFIX):
            site = str(value)[len(SITE_URI_PREFIX) :]
            return site if ID_PATTERN.fullmatch(site) else None
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value) if ID_PATTERN.fullmatch(str(value)) else None
    return None


def peer_identity(ssl_object: Any) -> PeerIdentity | None:
    """The identity of a TLS peer (an `ssl.SSLObject`); None without a certificate."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    info = ssl_object.getpeercert()
    if not der or not info:
        return None
    subject = ",".join(f"{k}={v}" for rdn in info.get("subject", ()) for k, v in rdn)
    return PeerIdentity(site_id=site_of(info), fingerprint=fingerprint(der), subject=subject)


__all__ = [
    "SITE_URI_PREFIX",
    "PeerIdentity",
    "TlsFileError",
    "fingerprint",
    "normalize_fingerprint",
    "peer_identity",
    "server_context",
    "site_of",
]
