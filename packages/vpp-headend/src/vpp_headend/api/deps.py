"""Dependencies the controllers receive by name."""

from __future__ import annotations

from typing import TypeAlias

from litestar.di import NamedDependency

from ..headend import Headend

#: The running headend (its services), injected as ``headend``.
HeadendDep: TypeAlias = NamedDependency[Headend]
