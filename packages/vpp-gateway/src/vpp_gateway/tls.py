"""Client TLS context toward the headend (mutual TLS when a certificate is configured)."""

from __future__ import annotations

import ssl

from .settings import TlsSettings


def client_context(tls: TlsSettings) -> ssl.SSLContext:
    """A verifying client context with ALPN h2; reads files, so call it off the event loop."""
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca) if tls.ca else None
    )
    if tls.cert:
        ctx.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None)
    ctx.set_alpn_protocols(["h2"])
    return ctx
