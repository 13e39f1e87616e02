"""Security: per-asset credential hashes, REST API tokens, revoked certificates.

Revision ID: 0002_security
Revises: 0001_initial
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002_security"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UP = [
    # SHA-256 (hex) of the credential a gateway must present for this asset; NULL = none.
    "ALTER TABLE assets ADD COLUMN credential_sha256 text",
    """
    CREATE TABLE api_tokens (
        token_id text PRIMARY KEY,
        name text NOT NULL DEFAULT '',
        role text NOT NULL CHECK (role IN ('operator', 'viewer')),
        token_sha256 text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL DEFAULT now(),
        revoked_at timestamptz
    )
    """,
    """
    CREATE TABLE revoked_certificates (
        fingerprint_sha256 text PRIMARY KEY,
        reason text NOT NULL DEFAULT '',
        revoked_at timestamptz NOT NULL DEFAULT now()
    )
    """,
]

_DOWN = [
    "DROP TABLE IF EXISTS revoked_certificates",
    "DROP TABLE IF EXISTS api_tokens",
    "ALTER TABLE assets DROP COLUMN IF EXISTS credential_sha256",
]


def upgrade() -> None:
    for statement in _UP:
        op.execute(statement)


def downgrade() -> None:
    for statement in _DOWN:
        op.execute(statement)
