"""The DynamoDB item codec and expression helpers every table adapter shares. Every state rule
is a ConditionExpression, so two writers racing on one record cannot both win (the local adapters
get the same from SQLite transactions).

Item layout: one attribute per record field, in camelCase. Floats are stored as Decimal (DynamoDB
has no float type); free-form dicts (`Task.info`, `FunctionRecord.resources`) are stored as JSON
strings so that they round-trip exactly (a Decimal cannot tell 7.0 from 7). Index key attributes
cannot hold an empty string, so such a field (`Task.owner`) is left out when empty and reads back
as its default.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from typing import Any, Generic, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic import BaseModel, TypeAdapter

from sdcore.errors import InvalidInputError

# DynamoDB's hard limit is 400 KB per item; refuse well before it with a clear error.
MAX_ITEM_BYTES = 350 * 1024

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

R = TypeVar("R", bound=BaseModel)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def to_dynamo(value: Any) -> Any:
    """Plain JSON-ish Python -> what boto3's serializer takes (floats become Decimal)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [to_dynamo(v) for v in value]
    return value


def from_dynamo(value: Any) -> Any:
    """The inverse of `to_dynamo`: Decimal becomes int when integral, else float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [from_dynamo(v) for v in value]
    return value


def serialize(value: Any) -> dict[str, Any]:
    return _serializer.serialize(to_dynamo(value))


def deserialize_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: from_dynamo(_deserializer.deserialize(v)) for k, v in item.items()}


@cache
def _adapter(cls: type[BaseModel], field: str) -> TypeAdapter[Any]:
    return TypeAdapter(cls.model_fields[field].annotation or Any)


class Codec(Generic[R]):
    """Record <-> item, field by field, so partial updates use the same encoding as full puts."""

    def __init__(
        self,
        cls: type[R],
        key_field: str,
        json_fields: frozenset[str] = frozenset(),
        omit_empty: frozenset[str] = frozenset(),
    ):
        self.cls = cls
        self.key_field = key_field
        self.key_attr = camel(key_field)
        self.json_fields = json_fields
        # index keys: DynamoDB refuses "" there, so an empty value is not stored (or is removed)
        self.omit_empty = omit_empty
        self.attr = {field: camel(field) for field in cls.model_fields}
        self.field = {attr: field for field, attr in self.attr.items()}

    def _encode(self, field: str, value: Any) -> Any:
        if value is None or (value == "" and field in self.omit_empty):
            return None
        return json.dumps(value) if field in self.json_fields else to_dynamo(value)

    def item(self, record: R) -> dict[str, Any]:
        data = record.model_dump(mode="json")
        encoded = {self.attr[f]: self._encode(f, v) for f, v in data.items()}
        item = {attr: serialize(v) for attr, v in encoded.items() if v is not None}
        check_size(item, self.cls.__name__.lower())
        return item

    def fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Validated, encoded attribute values of a partial update; None means remove."""
        out: dict[str, Any] = {}
        for field, value in fields.items():
            if field not in self.attr:
                raise TypeError(f"{self.cls.__name__} has no field {field!r}")
            if field == self.key_field:
                raise TypeError(f"{field!r} is the key and cannot change")
            adapter = _adapter(self.cls, field)
            plain = adapter.dump_python(adapter.validate_python(value), mode="json")
            out[self.attr[field]] = self._encode(field, plain)
        return out

    def record(self, item: dict[str, Any]) -> R:
        data: dict[str, Any] = {}
        for attr, value in deserialize_item(item).items():
            field = self.field.get(attr)
            if field is None:
                continue
            data[field] = json.loads(value) if field in self.json_fields else value
        return self.cls.model_validate(data)

    def key(self, value: str) -> dict[str, Any]:
        return {self.key_attr: {"S": value}}


def check_size(item: dict[str, Any], what: str) -> None:
    size = len(json.dumps(item, default=str).encode())
    if size > MAX_ITEM_BYTES:
        raise InvalidInputError(what, f"record too large ({size} bytes; the limit is 400 KB)")


def update_expression(
    values: dict[str, Any],
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """SET every value that is not None, REMOVE the others (a record field left at None)."""
    names: dict[str, str] = {}
    params: dict[str, Any] = {}
    sets, removes = [], []
    for i, (attr, value) in enumerate(values.items()):
        names[f"#u{i}"] = attr
        if value is None:
            removes.append(f"#u{i}")
        else:
            params[f":u{i}"] = serialize(value)
            sets.append(f"#u{i} = :u{i}")
    check_size(params, "fields")
    parts = []
    if sets:
        parts.append("SET " + ", ".join(sets))
    if removes:
        parts.append("REMOVE " + ", ".join(removes))
    return " ".join(parts), names, params


def in_condition(name: str, values: list[str], prefix: str) -> tuple[str, dict[str, Any]]:
    placeholders = {f":{prefix}{i}": {"S": v} for i, v in enumerate(values)}
    return f"{name} IN ({', '.join(placeholders)})", placeholders


def scan(client: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator("scan").paginate(**kwargs):
        yield from page.get("Items", [])
