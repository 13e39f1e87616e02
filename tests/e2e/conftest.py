"""Fixtures of the end-to-end tier: a real headend process on a fresh database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from e2e_system import System
from launcher import Launcher


@pytest.fixture
async def system(tmp_path: Path, db_url: str) -> AsyncIterator[System]:
    """A headend (not started yet: import the registry first) and a launcher in tmp_path."""
    launcher = Launcher(tmp_path)
    sys_ = System(launcher, db_url, launcher.headend(db_url))
    try:
        yield sys_
    finally:
        await sys_.close()
