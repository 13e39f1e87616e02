"""`vpp-headend certs ...`: a pilot CA, site and server certificates, the deny-list."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from vpp_headend.cli import app as cli_app
from vpp_headend.db.engine import make_engine
from vpp_headend.db.security_repo import certificate_revoked
from vpp_headend.tls import SITE_URI_PREFIX


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_certs_init_issue_site_and_server(tmp_path: Path) -> None:
    runner = CliRunner()
    pki = tmp_path / "pki"
    done = runner.invoke(cli_app, ["certs", "init", "--dir", str(pki)])
    assert done.exit_code == 0, done.output
    assert stat.S_IMODE((pki / "ca.key").stat().st_mode) == 0o600
    again = runner.invoke(cli_app, ["certs", "init", "--dir", str(pki)])
    assert again.exit_code == 2
    assert "already holds a CA" in again.output

    site = runner.invoke(cli_app, ["certs", "issue-site", "site-a", "--dir", str(pki)])
    assert site.exit_code == 0, site.output
    cert = _cert(pki / "sites" / "site-a.pem")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"{SITE_URI_PREFIX}site-a"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert stat.S_IMODE((pki / "sites" / "site-a.key").stat().st_mode) == 0o600
    assert cert.issuer == _cert(pki / "ca.pem").subject

    bad = runner.invoke(cli_app, ["certs", "issue-site", "site a!", "--dir", str(pki)])
    assert bad.exit_code == 2

    server = runner.invoke(
        cli_app,
        [
            "certs",
            "issue-server",
            "--name",
            "headend.example",
            "--name",
            "10.0.0.5",
            "--dir",
            str(pki),
        ],
    )
    assert server.exit_code == 0, server.output
    scert = _cert(pki / "server.pem")
    ssan = scert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ssan.get_values_for_type(x509.DNSName) == ["headend.example"]
    assert [str(ip) for ip in ssan.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    seku = scert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(seku) == [ExtendedKeyUsageOID.SERVER_AUTH]

    no_ca = runner.invoke(cli_app, ["certs", "issue-site", "x", "--dir", str(tmp_path / "none")])
    assert no_ca.exit_code == 2
    assert "certs init" in no_ca.output


def test_certs_revoke_puts_the_fingerprint_on_the_deny_list(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VPP_DATABASE_URL", db_url)
    runner = CliRunner()
    pki = tmp_path / "pki"
    assert runner.invoke(cli_app, ["certs", "init", "--dir", str(pki)]).exit_code == 0
    assert runner.invoke(cli_app, ["certs", "issue-site", "s1", "--dir", str(pki)]).exit_code == 0
    pem = pki / "sites" / "s1.pem"
    fp = runner.invoke(cli_app, ["certs", "fingerprint", str(pem)]).stdout.strip()
    assert len(fp) == 64
    done = runner.invoke(cli_app, ["certs", "revoke", str(pem), "--reason", "test"])
    assert done.exit_code == 0, done.output
    assert fp in done.stdout
    colons = ":".join(fp[i : i + 2] for i in range(0, 64, 2)).upper()
    again = runner.invoke(cli_app, ["certs", "revoke", colons])
    assert "already revoked" in again.stdout
    assert runner.invoke(cli_app, ["certs", "revoke", "not-a-file"]).exit_code == 2

    async def check() -> bool:
        engine = make_engine(db_url, pool_size=1)
        try:
            return await certificate_revoked(engine, fp)
        finally:
            await engine.dispose()

    assert asyncio.run(check())
