"""The schema compaction (schemas.py): shorter schemas that accept exactly what the originals do."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, Field

from blockrun_mcp import results
from blockrun_mcp.schemas import compact, inline_single_refs


class Leaf(BaseModel):
    title: str  # a property named "title" is not pydantic's title: it stays
    size: int | None = None


class Tree(BaseModel):
    name: str
    children: list[Tree] = []  # recursive: its definition must stay in $defs


class Shared(BaseModel):
    first: Leaf
    second: Leaf  # used twice: stays in $defs
    note: str | None = Field(None, description="kept")


RESULT_MODELS = [
    results.AskResult,
    results.ModelList,
    results.ImageResult,
    results.VideoResult,
    results.Estimate,
    results.BudgetResult,
    results.WalletResult,
]


def _output(model: type[BaseModel]) -> dict[str, Any]:
    return inline_single_refs(compact(model.model_json_schema()))


def _accepts(schema: dict[str, Any], value: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def test_titles_and_null_defaults_go_and_nullable_types_fold():
    schema = compact(Leaf.model_json_schema())
    assert "title" not in schema and "title" in schema["properties"]
    size = schema["properties"]["size"]
    assert size == {"type": ["integer", "null"]}
    inputs = compact(Leaf.model_json_schema(), optional_inputs=True)
    assert inputs["properties"]["size"] == {"type": "integer"}


def test_only_single_use_non_recursive_definitions_are_inlined():
    shared = inline_single_refs(compact(Shared.model_json_schema()))
    assert set(shared["$defs"]) == {"Leaf"}
    assert shared["properties"]["first"] == {"$ref": "#/$defs/Leaf"}
    tree = inline_single_refs(compact(Tree.model_json_schema()))
    assert "Tree" in tree["$defs"]

    class Holder(BaseModel):
        leaf: Leaf

    holder = inline_single_refs(compact(Holder.model_json_schema()))
    assert "$defs" not in holder and holder["properties"]["leaf"]["properties"]["title"]


@pytest.mark.parametrize("model", [*RESULT_MODELS, Shared, Tree], ids=lambda m: m.__name__)
def test_compacted_output_schemas_accept_what_the_originals_accept(model):
    original = model.model_json_schema()
    compacted = _output(model)
    assert len(json.dumps(compacted)) < len(json.dumps(original))
    samples: list[Any] = [
        {},
        None,
        [],
        "text",
        {"title": "t", "size": None},
        {"title": "t", "size": 3},
        {"title": 1},
        {"name": "a", "children": [{"name": "b", "children": []}]},
        {"name": "a", "children": [{"name": 2}]},
        {"first": {"title": "x"}, "second": {"title": "y", "size": "big"}},
    ]
    valid = VALID.get(model, [])
    for instance in valid:
        data = instance.model_dump(mode="json")
        assert _accepts(original, data) and _accepts(compacted, data)
        samples += [
            data,
            *({**data, key: "wrong"} for key in data),
            *({**data, k: None} for k in data),
        ]
    for sample in samples:
        assert _accepts(compacted, sample) == _accepts(original, sample), sample


USAGE = results.Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
VALID: dict[type[BaseModel], list[BaseModel]] = {
    results.AskResult: [
        results.AskResult(
            model="m",
            content="c",
            finish_reason=None,
            usage=USAGE,
            cost_usd=0.1,
            budget_remaining_usd=0.9,
            thread_id="thr_1",
        ),
        results.AskResult(
            model="m",
            content="",
            finish_reason="stop",
            refused=True,
            usage=USAGE,
            cost_usd=0,
            budget_remaining_usd=0,
            thread_id="thr_2",
            files=[results.FileSent(path="a.py", bytes=10, tokens=3)],
            transaction="0xab",
            note="n",
        ),
    ],
    results.ModelList: [
        results.ModelList(
            models=[
                results.ModelInfo(
                    id="a/b",
                    name="B",
                    provider="a",
                    input_price=1,
                    output_price=2,
                    context_window=None,
                    categories=["chat"],
                    available=True,
                    image_price=0.04,
                )
            ],
            stale=True,
            note="n",
        )
    ],
    results.ImageResult: [
        results.ImageResult(
            images=[results.ImageFile(path="/p", url=None)],
            model="m",
            cost_usd=0.04,
            budget_remaining_usd=1,
        )
    ],
    results.VideoResult: [
        results.VideoResult(status="running", job_id="j", cost_usd=0, budget_remaining_usd=1)
    ],
    results.Estimate: [results.Estimate(model="m", estimated_usd=0.01, basis="b")],
    results.BudgetResult: [
        results.BudgetResult(
            session_limit_usd=1,
            session_spent_usd=0,
            budget_remaining_usd=1,
            per_call_cap_usd=0.5,
            recent=[
                results.Receipt(
                    time="t",
                    tool="generate_video",
                    model="m",
                    cost_usd=0.25,
                    status="pending",
                    transaction=None,
                    job_id="vid_1",
                )
            ],
        )
    ],
    results.WalletResult: [results.WalletResult(address="0x", network="base", funding="f")],
}


def test_inputs_still_accept_an_explicit_null_for_an_optional_parameter():
    # Omitting is how a caller says "none"; an explicit null is still validated by pydantic,
    # which the server runs on every call, so the shorter schema loses nothing a host sends.
    schema = compact(Leaf.model_json_schema(), optional_inputs=True)
    assert _accepts(schema, {"title": "t"})
    assert Leaf.model_validate({"title": "t", "size": None}).size is None


def test_inline_single_refs_keeps_shared_and_recursive_definitions():

    schema = {
        "type": "object",
        "properties": {
            "once": {"$ref": "#/$defs/Once"},
            "a": {"$ref": "#/$defs/Shared"},
            "b": {"type": "array", "items": {"$ref": "#/$defs/Shared"}},
            "tree": {"$ref": "#/$defs/Node"},
        },
        "$defs": {
            "Once": {"type": "object", "properties": {"x": {"type": "integer"}}},
            "Shared": {"type": "string"},
            "Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}},
        },
    }
    inlined = inline_single_refs(schema)
    assert inlined["properties"]["once"] == schema["$defs"]["Once"]
    assert inlined["properties"]["a"] == {"$ref": "#/$defs/Shared"}
    assert inlined["properties"]["tree"] == {"$ref": "#/$defs/Node"}
    assert set(inlined["$defs"]) == {"Shared", "Node"}
    valid = {"once": {"x": 1}, "a": "s", "b": ["t"], "tree": {"child": {"child": {}}}}
    for document, ok in ((valid, True), ({**valid, "once": {"x": "no"}}, False)):
        assert jsonschema.Draft202012Validator(inlined).is_valid(document) is ok
        assert jsonschema.Draft202012Validator(schema).is_valid(document) is ok
    assert inline_single_refs({"type": "object"}) == {"type": "object"}
