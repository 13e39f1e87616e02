"""`JsonBody[Struct]`: how a handler's ``data`` is read, and how its schema is published.

Litestar's own JSON decoding would refuse NaN as a syntax error and coerce ``"12"`` to a
number; this reads the body with `body.decode_json` and `bodies.to_struct` instead,
while the OpenAPI document still shows the struct as the request body.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec
from litestar.dto import MsgspecDTO
from litestar.openapi.spec import Reference, Schema
from litestar.typing import FieldDefinition

from .bodies import to_struct
from .body import decode_json

S = TypeVar("S", bound=msgspec.Struct)


class JsonBody(MsgspecDTO[S], Generic[S]):
    """Use as ``@post(..., dto=JsonBody[MyStruct], return_dto=None)`` with
    ``data: JSONBody[MyStruct | None] = None`` (an empty body arrives as ``None``)."""

    def decode_bytes(self, value: bytes) -> Any:
        return to_struct(decode_json(value), self.model_type)

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any
    ) -> Reference | Schema:
        # The struct itself, not a DTO-generated transfer model: it is what is decoded.
        schema: Reference | Schema = schema_creator.for_field_definition(
            FieldDefinition.from_annotation(cls.model_type)
        )
        return schema


__all__ = ["JsonBody"]
