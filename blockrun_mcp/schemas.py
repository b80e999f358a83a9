"""The tools' JSON schemas made short: the whole tool list goes to the host's model on every turn.

Both transformations keep what a schema accepts exactly as it was; tests/test_schemas.py checks
that against schemas pydantic writes.
"""

from __future__ import annotations

import json
from typing import Any


def compact(node: Any, *, optional_inputs: bool = False, in_properties: bool = False) -> Any:
    """Shrink a JSON schema: drop pydantic's titles, null defaults (and in output schemas every
    default), fold nullable unions.

    The whole tool list goes to the host's model on every turn, so every byte counts.
    In output schemas `anyOf: [{type: X}, {type: null}]` becomes the equivalent `type: [X, "null"]`.
    In input schemas (`optional_inputs`) an optional parameter is simply `type: X`: omitting it
    is how a caller says "none", and an explicit null is still accepted by validation.
    """
    if isinstance(node, list):
        return [compact(item, optional_inputs=optional_inputs) for item in node]
    if not isinstance(node, dict):
        return node
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        others = [option for option in any_of if option != {"type": "null"}]
        simple = len(others) == 1 and set(others[0]) == {"type"}
        if simple and isinstance(others[0]["type"], str):
            node = {k: v for k, v in node.items() if k != "anyOf"}
            node["type"] = others[0]["type"] if optional_inputs else [others[0]["type"], "null"]
        elif optional_inputs and len(others) == 1 and isinstance(others[0], dict):
            # An optional array or enum parameter: the option itself (null stays accepted).
            node = {**{k: v for k, v in node.items() if k != "anyOf"}, **others[0]}
        elif (
            len(others) == 1 and isinstance(others[0].get("type"), str) and "enum" not in others[0]
        ):
            # A nullable array or object in an output: its own keywords, null added to its type
            # (`items` and `properties` constrain only values of their own type).
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            node = {**rest, **others[0], "type": [others[0]["type"], "null"]}
    result = {}
    for key, value in node.items():
        if not in_properties and key == "title" and isinstance(value, str):
            continue
        # A default only annotates (JSON Schema applies none); in an output schema it says
        # nothing, as every result carries every field.
        if key == "default" and (value is None or not optional_inputs) and not in_properties:
            continue
        result[key] = compact(
            value,
            optional_inputs=optional_inputs,
            in_properties=key in ("properties", "$defs") and not in_properties,
        )
    return result


def without_required(schema: Any) -> Any:
    """An output schema without its `required` lists.

    Every result carries every field (the server dumps them all, nulls included), so in an
    output schema `required` only restates that, and it was a tenth of the whole tool list.
    Input schemas keep theirs: there it says what the caller must send.
    """
    if isinstance(schema, list):
        return [without_required(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: without_required(value)
        for key, value in schema.items()
        if not (key == "required" and isinstance(value, list))
    }


def shallow(schema: dict[str, Any]) -> dict[str, Any]:
    """An output schema that names each field and its type, and stops there: a field that is
    an object or an array of objects says just that. The result's text shows what is inside
    (and the tool list, sent on every turn, was twice as long with it all spelled out)."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return schema
    return {**schema, "properties": {name: _type_only(field) for name, field in properties.items()}}


def _type_only(field: Any) -> Any:
    if not isinstance(field, dict):
        return field
    if isinstance(field.get("anyOf"), list):
        types = [option.get("type") for option in field["anyOf"] if isinstance(option, dict)]
        if all(isinstance(kind, str) for kind in types):
            return {"type": types}
        return field
    kinds = field.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "object" in kinds or "array" in kinds:
        shown = {"type": field["type"]}
        if "description" in field:
            shown["description"] = field["description"]
        return shown
    return field


def inline_single_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """Put each `$defs` entry used exactly once where it is used, and drop `$defs` if emptied.

    Shorter for the host's model to read, and quicker for a client to
    validate each result against (no reference to resolve). Shared or recursive ones stay.
    """
    definitions = schema.get("$defs")
    if not isinstance(definitions, dict):
        return schema
    text = json.dumps(schema)
    once = {
        name: body
        for name, body in definitions.items()
        if text.count(f'"#/$defs/{name}"') == 1 and f'"#/$defs/{name}"' not in json.dumps(body)
    }

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.removeprefix("#/$defs/") in once and len(node) == 1:
            return inline(once[ref.removeprefix("#/$defs/")])
        return {key: inline(value) for key, value in node.items() if key != "$defs"}

    result = inline(schema)
    remaining = {name: body for name, body in definitions.items() if name not in once}
    if remaining:
        result["$defs"] = remaining
    return result
