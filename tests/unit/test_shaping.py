"""Request shaping (BRIEF §4.1 `request.*`): strip, then defaults, then overrides, then the rules,
only on chat, completions and responses; without the reference stack's rewrite defects (seed
inventory §3.2, §12 items 18–20)."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from sparkctl.catalog import load_catalog
from sparkctl.catalog.spec import RequestShaping
from sparkctl.gateway.shaping import SHAPED_ROUTES, shape
from sparkctl.settings import Settings

MODELS = Path(__file__).resolve().parents[2] / "models"
CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
COMPLETIONS = "/v1/completions"
TOOL_KEYS = ["tools", "tool_choice", "functions", "function_call", "parallel_tool_calls"]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def rules(**kw: Any) -> RequestShaping:
    return RequestShaping(**kw)


def shaped(body: dict[str, Any], r: RequestShaping, route: str = CHAT) -> dict[str, Any]:
    """`shape`, also checking that the input is never mutated."""
    before = copy.deepcopy(body)
    out = shape(body, r, route)
    assert body == before
    return out


@pytest.fixture(scope="module")
def catalog_rules() -> dict[str, RequestShaping]:
    catalog = load_catalog(Settings(), [MODELS])
    return {m.spec.id: m.spec.request for m in catalog}


# ---- routes and inactive rules -------------------------------------------------------------------


def test_shaped_routes() -> None:
    assert frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"}) == SHAPED_ROUTES


@pytest.mark.parametrize("route", ["/v1/embeddings", "/v1/models", "/v1/audio/speech", "/v1/chat", ""])
def test_unshaped_route_returns_the_same_object(route: str) -> None:
    body = {"input": "x", "max_tokens": 5, "tools": TOOLS}
    r = rules(strip=["max_tokens"], defaults={"a": 1}, overrides={"b": 2}, force_tool_choice="required")
    assert shape(body, r, route) is body
    assert body == {"input": "x", "max_tokens": 5, "tools": TOOLS}


@pytest.mark.parametrize("route", sorted(SHAPED_ROUTES))
def test_inactive_rules_return_the_same_object(route: str) -> None:
    body = {"messages": [{"role": "user", "content": [IMAGE]}], "tools": TOOLS}
    assert not RequestShaping().active
    assert shape(body, RequestShaping(), route) is body


@pytest.mark.parametrize("route", sorted(SHAPED_ROUTES))
def test_every_shaped_route_is_shaped(route: str) -> None:
    out = shaped({"temperature": 1}, rules(overrides={"temperature": 0}), route)
    assert out == {"temperature": 0}


def test_no_change_needed_returns_the_same_object() -> None:
    # Active rules that the body already satisfies: the caller can forward the original bytes.
    body = {
        "chat_template_kwargs": {"enable_thinking": True},
        "temperature": 0.5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    r = rules(
        strip=["functions"],
        defaults={"chat_template_kwargs": {"enable_thinking": False}},
        overrides={"temperature": 0.5},
        force_tool_choice="required",
        text_only=True,
    )
    assert shape(body, r, CHAT) is body


def test_a_changed_result_is_a_new_dict() -> None:
    body: dict[str, Any] = {"messages": []}
    out = shaped(body, rules(defaults={"n": 1}))
    assert out is not body
    assert out == {"messages": [], "n": 1}


# ---- strip ---------------------------------------------------------------------------------------


def test_strip_removes_top_level_keys_only() -> None:
    body = {"a": 1, "b": {"a": 2}, "c": 3}
    assert shaped(body, rules(strip=["a", "c", "absent"])) == {"b": {"a": 2}}


def test_strip_of_absent_keys_is_no_change() -> None:
    body = {"a": 1}
    assert shape(body, rules(strip=["b"]), CHAT) is body


def test_tool_stripping_on_qwen3_5_0_8b(catalog_rules: dict[str, RequestShaping]) -> None:
    r = catalog_rules["qwen3.5-0.8b"]
    assert sorted(r.strip) == sorted(TOOL_KEYS)
    body = {
        "model": "qwen3.5-0.8b",
        "messages": [{"role": "user", "content": "title this"}],
        "tools": TOOLS,
        "tool_choice": "auto",
        "functions": [{"name": "f"}],
        "function_call": "auto",
        "parallel_tool_calls": True,
        "max_tokens": 20,
    }
    assert shaped(body, r) == {
        "model": "qwen3.5-0.8b",
        "messages": [{"role": "user", "content": "title this"}],
        "max_tokens": 20,
    }


# ---- defaults ------------------------------------------------------------------------------------


def test_defaults_fill_absent_keys() -> None:
    assert shaped({"a": 1}, rules(defaults={"b": 2, "c": [1, 2]})) == {"a": 1, "b": 2, "c": [1, 2]}


@pytest.mark.parametrize("value", [0, "", False, None, [], {"x": 1}, "client"])
def test_defaults_never_replace_a_value_the_client_set(value: Any) -> None:
    # Including explicit null: a key present counts as set by the client.
    body = {"k": value}
    out = shaped(body, rules(defaults={"k": "default"}))
    assert out["k"] == value


def test_defaults_dict_against_client_non_dict_keeps_the_client_value() -> None:
    body = {"chat_template_kwargs": None}
    r = rules(defaults={"chat_template_kwargs": {"enable_thinking": False}})
    assert shape(body, r, CHAT) is body


def test_defaults_merge_at_depth() -> None:
    r = rules(defaults={"chat_template_kwargs": {"enable_thinking": False}})
    # absent → filled
    assert shaped({}, r) == {"chat_template_kwargs": {"enable_thinking": False}}
    # client true → stays true
    assert shaped({"chat_template_kwargs": {"enable_thinking": True}}, r) == {
        "chat_template_kwargs": {"enable_thinking": True}
    }
    # client sets another kwarg → both present
    assert shaped({"chat_template_kwargs": {"thinking_budget": 10}}, r) == {
        "chat_template_kwargs": {"thinking_budget": 10, "enable_thinking": False}
    }
    # several levels deep
    deep = rules(defaults={"a": {"b": {"c": 1, "d": 2}}})
    assert shaped({"a": {"b": {"c": 9}, "e": 3}}, deep) == {"a": {"b": {"c": 9, "d": 2}, "e": 3}}


def test_glm_4_7_flash_default_non_thinking(catalog_rules: dict[str, RequestShaping]) -> None:
    r = catalog_rules["glm-4.7-flash-awq"]
    assert r.thinking_default is False and not r.thinking_switch and not r.defaults
    assert not r.overrides and not r.strip and r.force_tool_choice is None and not r.text_only
    msgs = [{"role": "user", "content": "hello"}]

    out = shaped({"model": "glm-4.7-flash-awq", "messages": msgs}, r)
    assert out == {
        "model": "glm-4.7-flash-awq",
        "messages": msgs,
        # both names: GLM's template reads `thinking`, Qwen's `enable_thinking`
        "chat_template_kwargs": {"enable_thinking": False, "thinking": False},
    }

    opted_in = {"messages": msgs, "chat_template_kwargs": {"enable_thinking": True}}
    assert shape(opted_in, r, CHAT) is opted_in


def test_every_shipped_thinking_default_is_a_default_not_an_override(
    catalog_rules: dict[str, RequestShaping],
) -> None:
    with_default = [mid for mid, r in catalog_rules.items() if r.thinking_default is not None]
    assert "glm-4.7-flash-awq" in with_default
    for mid in with_default:
        body = {"messages": [], "chat_template_kwargs": {"enable_thinking": True}}
        assert shaped(body, catalog_rules[mid])["chat_template_kwargs"]["enable_thinking"] is True, mid


# ---- overrides -----------------------------------------------------------------------------------


def test_overrides_replace_client_values() -> None:
    r = rules(overrides={"temperature": 0.2, "stop": ["x"], "n": 1})
    assert shaped({"temperature": 1.0, "stop": "y"}, r) == {"temperature": 0.2, "stop": ["x"], "n": 1}


def test_overrides_merge_dicts_recursively() -> None:
    r = rules(overrides={"chat_template_kwargs": {"enable_thinking": False}, "a": {"b": {"c": 1}}})
    body = {"chat_template_kwargs": {"enable_thinking": True, "other": 1}, "a": {"b": {"d": 2}, "e": 3}}
    assert shaped(body, r) == {
        "chat_template_kwargs": {"enable_thinking": False, "other": 1},
        "a": {"b": {"c": 1, "d": 2}, "e": 3},
    }


def test_overrides_replace_a_client_non_dict_with_the_table() -> None:
    r = rules(overrides={"chat_template_kwargs": {"enable_thinking": False}})
    assert shaped({"chat_template_kwargs": "junk"}, r) == {"chat_template_kwargs": {"enable_thinking": False}}
    assert shaped({"chat_template_kwargs": None}, r) == {"chat_template_kwargs": {"enable_thinking": False}}


def test_overrides_compare_types_strictly() -> None:
    # `1`, `1.0` and `true` are different JSON; the override's exact value is sent.
    r = rules(overrides={"n": 1})
    assert shaped({"n": True}, r)["n"] is not True
    assert type(shaped({"n": 1.0}, r)["n"]) is int
    same = {"n": 1}
    assert shape(same, r, CHAT) is same


def test_overrides_are_deep_copies() -> None:
    r = rules(overrides={"stop": ["a"], "x": {"y": [1]}})
    out = shaped({}, r)
    out["stop"].append("b")
    out["x"]["y"].append(2)
    assert r.overrides == {"stop": ["a"], "x": {"y": [1]}}


# ---- order ---------------------------------------------------------------------------------------


def test_a_stripped_key_comes_back_from_defaults() -> None:
    r = rules(strip=["temperature"], defaults={"temperature": 0.7})
    assert shaped({"temperature": 2.0}, r) == {"temperature": 0.7}


def test_a_stripped_key_comes_back_from_overrides() -> None:
    r = rules(strip=["chat_template_kwargs"], overrides={"chat_template_kwargs": {"a": 1}})
    assert shaped({"chat_template_kwargs": {"b": 2}}, r) == {"chat_template_kwargs": {"a": 1}}


def test_overrides_beat_defaults() -> None:
    r = rules(
        defaults={"temperature": 0.7, "k": {"a": 1, "b": 1}}, overrides={"temperature": 0.1, "k": {"b": 2}}
    )
    assert shaped({}, r) == {"temperature": 0.1, "k": {"a": 1, "b": 2}}


def test_rules_see_the_overridden_body() -> None:
    # overrides add tools → force_tool_choice sees them
    r = rules(overrides={"tools": TOOLS}, force_tool_choice="required")
    assert shaped({"messages": [{"role": "user", "content": "hi"}]}, r)["tool_choice"] == "required"
    # overrides set tool_choice "none" → not forced
    r = rules(overrides={"tool_choice": "none"}, force_tool_choice="required")
    assert shaped({"tools": TOOLS}, r)["tool_choice"] == "none"
    # a default tool_choice fills the absent key before the rule looks
    r = rules(defaults={"tool_choice": "none"}, force_tool_choice="required")
    assert shaped({"tools": TOOLS}, r)["tool_choice"] == "none"
    # stripped tools → nothing to force
    r = rules(strip=["tools"], force_tool_choice="required")
    assert "tool_choice" not in shaped({"tools": TOOLS}, r)
    # text_only flattens content that overrides put in
    r = rules(
        overrides={"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}, text_only=True
    )
    assert shaped({"messages": []}, r)["messages"] == [{"role": "user", "content": "a"}]


# ---- force_tool_choice ---------------------------------------------------------------------------

FORCE = rules(force_tool_choice="required")


def test_first_turn_is_forced() -> None:
    body = {
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
        "tools": TOOLS,
    }
    assert shaped(body, FORCE) == {**body, "tool_choice": "required"}


@pytest.mark.parametrize("choice", [None, "auto"])
def test_null_or_auto_is_forced(choice: Any) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, "tool_choice": choice}
    assert shaped(body, FORCE)["tool_choice"] == "required"


def test_after_a_tool_result_not_forced() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "tools": TOOLS,
    }
    assert shape(body, FORCE, CHAT) is body


def test_after_a_legacy_function_result_not_forced() -> None:
    body = {
        "messages": [{"role": "function", "name": "f", "content": "1"}],
        "tools": TOOLS,
        "tool_choice": "auto",
    }
    assert shape(body, FORCE, CHAT) is body


def test_responses_api_first_turn_forced_and_after_output_not() -> None:
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    first = {"input": [{"role": "user", "content": "weather?"}], "tools": tools}
    assert shaped(first, FORCE, RESPONSES)["tool_choice"] == "required"
    string_input = {"input": "weather?", "tools": tools}
    assert shaped(string_input, FORCE, RESPONSES)["tool_choice"] == "required"
    later = {
        "input": [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ],
        "tools": tools,
    }
    assert shape(later, FORCE, RESPONSES) is later


@pytest.mark.parametrize(
    "choice",
    [
        "none",
        "required",
        {"type": "function", "function": {"name": "get_weather"}},
        {"type": "function", "name": "x"},
    ],
)
def test_explicit_choices_kept(choice: Any) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, "tool_choice": choice}
    assert shape(body, FORCE, CHAT) is body


@pytest.mark.parametrize("tools", [[], None, "tools", {"a": 1}])
def test_no_tools_not_forced(tools: Any) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": tools}
    assert shape(body, FORCE, CHAT) is body
    absent = {"messages": [{"role": "user", "content": "hi"}]}
    assert shape(absent, FORCE, CHAT) is absent


def test_shipped_force_tool_choice_models(catalog_rules: dict[str, RequestShaping]) -> None:
    forced = sorted(mid for mid, r in catalog_rules.items() if r.force_tool_choice == "required")
    assert "qwen3-coder-30b-a3b-instruct" in forced
    for mid in forced:
        body = {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
        assert shaped(body, catalog_rules[mid])["tool_choice"] == "required"


# ---- text_only -----------------------------------------------------------------------------------

TEXT = rules(text_only=True)


def test_images_are_dropped_and_text_kept() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, IMAGE]}]}
    assert shaped(body, TEXT) == {"messages": [{"role": "user", "content": "what is this?"}]}


def test_multiple_text_parts_are_joined_with_newlines() -> None:
    parts = [
        {"type": "text", "text": "a"},
        IMAGE,
        "b",
        {"type": "input_audio", "input_audio": {}},
        {"type": "text", "text": "c"},
    ]
    body = {"messages": [{"role": "user", "content": parts}]}
    out = shaped(body, TEXT)
    assert out["messages"][0]["content"] == "a\nb\nc"
    assert "[object Object]" not in json.dumps(out)


def test_no_text_array_is_left_unchanged() -> None:
    body = {"messages": [{"role": "user", "content": [IMAGE, IMAGE]}, {"role": "user", "content": []}]}
    assert shape(body, TEXT, CHAT) is body


def test_string_and_null_content_untouched() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]}
    assert shape(body, TEXT, CHAT) is body


def test_malformed_text_parts_are_not_text() -> None:
    parts = [
        {"type": "text", "text": 5},
        {"type": ["text"], "text": "x"},
        {"text": "no type"},
        {"type": "text", "text": "ok"},
    ]
    body = {"messages": [{"role": "user", "content": parts}]}
    assert shaped(body, TEXT)["messages"][0]["content"] == "ok"


def test_parallel_tool_results_untouched() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "two cities"}, IMAGE]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city":"A"}'}},
                {"id": "c2", "type": "function", "function": {"name": "w", "arguments": '{"city":"B"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "rainy"}]},
        {"role": "user", "content": "thanks"},
        {"role": "user", "content": "and?"},
    ]
    body: dict[str, Any] = {"messages": messages, "tools": TOOLS}
    out = shaped(body, rules(text_only=True, force_tool_choice="required"))
    assert "tool_choice" not in out  # a tool result is in the history
    got = out["messages"]
    assert len(got) == len(messages)  # nothing merged or dropped, consecutive same-role kept apart
    assert [m["role"] for m in got] == [m["role"] for m in messages]
    assert got[0]["content"] == "two cities"
    assert got[1] is messages[1]  # the tool calls are not even copied
    assert [m.get("tool_call_id") for m in got[2:4]] == ["c1", "c2"]
    assert got[2] is messages[2]
    assert got[3] == {"role": "tool", "tool_call_id": "c2", "content": "rainy"}
    assert got[4:] == messages[4:]


def test_responses_api_input_items_flattened() -> None:
    items = [
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "look"}, {"type": "input_image", "image_url": "x"}],
        },
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        {"type": "reasoning", "content": [{"type": "reasoning_text", "text": "hmm"}], "summary": []},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"role": "user", "content": [{"type": "input_image", "image_url": "x"}]},
        {"type": "some_future_item", "content": [{"type": "output_text", "text": "kept as an array"}]},
    ]
    body = {"input": items}
    out = shaped(body, TEXT, RESPONSES)
    assert out["input"][0] == {"role": "user", "content": "look"}
    assert out["input"][1] == {"type": "message", "role": "assistant", "content": "ok"}
    assert out["input"][2] is items[2]  # not a message: its content array keeps its schema
    assert out["input"][3] is items[3]
    assert out["input"][4] is items[4]  # no text part: unchanged
    assert out["input"][5] is items[5]  # only message items are flattened


def test_completions_prompt_untouched() -> None:
    body = {"prompt": ["a", "b"], "max_tokens": 3}
    assert shape(body, TEXT, COMPLETIONS) is body


def test_shipped_text_only_models(catalog_rules: dict[str, RequestShaping]) -> None:
    text_only = [mid for mid, r in catalog_rules.items() if r.text_only]
    assert text_only
    for mid in text_only:
        body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, IMAGE]}]}
        assert shaped(body, catalog_rules[mid])["messages"] == [{"role": "user", "content": "hi"}]


# ---- robustness ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"messages": "not a list", "tools": TOOLS},
        {"messages": None, "input": 5, "tools": TOOLS},
        {
            "messages": [1, "x", None, [], {"role": ["tool"]}, {"role": {"a": 1}, "content": {"a": 1}}],
            "tools": TOOLS,
        },
        {"messages": [{"content": [[], {}, None, 1, {"type": {"x": 1}}]}]},
        {"input": [{"type": ["message"], "content": [{"type": "text", "text": "a"}]}, {"type": {"k": 1}}]},
        {"tool_choice": ["auto"], "tools": TOOLS},
        {"tool_choice": {"type": "auto"}, "tools": [None]},
        {"chat_template_kwargs": [1, 2], "a": None},
    ],
)
def test_odd_shapes_do_not_raise(body: dict[str, Any]) -> None:
    r = rules(
        strip=["x"],
        defaults={"chat_template_kwargs": {"enable_thinking": False}, "a": {"b": 1}},
        overrides={"z": {"y": 1}},
        force_tool_choice="required",
        text_only=True,
    )
    for route in SHAPED_ROUTES:
        out = shaped(body, r, route)
        assert isinstance(out, dict)


@pytest.mark.parametrize("body", [None, 1, 1.5, "s", True, [], [{"messages": []}]])
def test_non_object_bodies_are_returned_as_they_are(body: Any) -> None:
    r = rules(defaults={"a": 1}, force_tool_choice="required", text_only=True)
    assert shape(body, r, CHAT) is body


RULE_SETS = [
    rules(strip=["tools", "tool_choice", "messages", "input"]),
    rules(
        defaults={"chat_template_kwargs": {"enable_thinking": False}, "messages": [], "k": {"a": {"b": 1}}}
    ),
    rules(overrides={"chat_template_kwargs": {"enable_thinking": False}, "tool_choice": "auto", "k": [1]}),
    rules(force_tool_choice="required"),
    rules(text_only=True),
    rules(
        strip=["tool_choice", "k"],
        defaults={"k": {"a": 1}, "tool_choice": None},
        overrides={"chat_template_kwargs": {"x": {"y": 2}}},
        force_tool_choice="required",
        text_only=True,
    ),
]

KEYS = [
    "messages",
    "input",
    "tools",
    "tool_choice",
    "chat_template_kwargs",
    "k",
    "content",
    "role",
    "type",
    "text",
]
ROLES = ["user", "assistant", "system", "tool", "function", None, 3]
TYPES = [
    "text",
    "input_text",
    "output_text",
    "image_url",
    "message",
    "function_call_output",
    "reasoning",
    None,
]


def _scalar(rng: random.Random) -> Any:
    return rng.choice([None, True, False, 0, -1, 2.5, "", "auto", "none", "required", "text", rng.random()])


def _value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth <= 0 or roll < 0.35:
        return _scalar(rng)
    if roll < 0.55:
        return [_value(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    if roll < 0.75:
        return _part(rng, depth - 1)
    return {rng.choice(KEYS): _value(rng, depth - 1) for _ in range(rng.randint(0, 4))}


def _part(rng: random.Random, depth: int) -> Any:
    """Something shaped roughly like a message, item or content part, often wrongly."""
    d: dict[str, Any] = {}
    if rng.random() < 0.8:
        d["role"] = rng.choice(ROLES)
    if rng.random() < 0.5:
        d["type"] = rng.choice(TYPES)
    if rng.random() < 0.5:
        d["text"] = rng.choice(["hello", 5, None, ["x"]])
    if rng.random() < 0.7:
        d["content"] = rng.choice(
            ["plain", None, [_value(rng, depth - 1) for _ in range(rng.randint(0, 3))], {"a": 1}, 7]
        )
    if rng.random() < 0.2:
        d["tool_call_id"] = rng.choice(["c1", "c2", None])
    return d


def _body(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key in KEYS:
        if rng.random() < 0.5:
            continue
        if key in ("messages", "input"):
            body[key] = rng.choice(
                [
                    [
                        _part(rng, 3) if rng.random() < 0.8 else _value(rng, 2)
                        for _ in range(rng.randint(0, 5))
                    ],
                    _value(rng, 2),
                ]
            )
        elif key == "tools":
            body[key] = rng.choice([TOOLS, [], None, _value(rng, 2)])
        else:
            body[key] = _value(rng, 3)
    return body


def test_fuzz_never_raises_never_mutates_and_is_idempotent() -> None:
    rng = random.Random(20260405)
    for _ in range(400):
        body = _body(rng)
        before = copy.deepcopy(body)
        for r in RULE_SETS:
            for route in (*sorted(SHAPED_ROUTES), "/v1/embeddings"):
                out = shape(body, r, route)
                assert body == before
                assert isinstance(out, dict)
                json.dumps(out)  # still plain JSON
                if route not in SHAPED_ROUTES:
                    assert out is body
                else:
                    # shaping what was already shaped gives the same body
                    assert shape(out, r, route) == out
                    # editing the result's top level never reaches the input
                    if out is not body:
                        out["__probe__"] = 1
                        assert "__probe__" not in body


# ---- the thinking switch (gateway/thinking.py) ---------------------------------------------------

SWITCH = RequestShaping(thinking_switch=True)


@pytest.mark.parametrize(
    ("given", "switch"),
    [
        ({"thinking": True}, True),
        ({"thinking": False}, False),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, True),
        ({"reasoning_effort": "none"}, False),
        ({"reasoning_effort": "high"}, True),
        ({"reasoningEffort": "minimal"}, True),
        ({"reasoning": {"effort": "none"}}, False),
        ({"reasoning_effort": "max"}, True),
        ({"reasoning_effort": "auto"}, True),
    ],
)
def test_a_clients_thinking_or_effort_reaches_the_switch(given: dict[str, Any], switch: bool) -> None:
    body = {"model": "m", "messages": [], **given}
    before = copy.deepcopy(body)
    out = shape(body, SWITCH, CHAT)
    assert body == before  # never mutated
    assert out["chat_template_kwargs"] == {"enable_thinking": switch, "thinking": switch}
    assert not {"thinking", "reasoning_effort", "reasoningEffort", "reasoning"} & set(out)


def test_an_unknown_effort_is_dropped_and_changes_nothing() -> None:
    out = shape({"model": "m", "reasoning_effort": "extreme"}, SWITCH, CHAT)
    assert out == {"model": "m"}


def test_the_clients_own_switch_wins_and_other_kwargs_stay() -> None:
    body = {
        "model": "m",
        "reasoning_effort": "high",
        "chat_template_kwargs": {"enable_thinking": False, "x": 1},
    }
    out = shape(body, SWITCH, CHAT)
    assert out["chat_template_kwargs"] == {"enable_thinking": False, "x": 1} and "reasoning_effort" not in out
    out = shape({"model": "m", "thinking": True, "chat_template_kwargs": {"x": 1}}, SWITCH, CHAT)
    assert out["chat_template_kwargs"] == {"x": 1, "enable_thinking": True, "thinking": True}


def test_a_reasoning_object_keeps_what_is_not_the_effort() -> None:
    out = shape({"model": "m", "reasoning": {"effort": "low", "summary": "auto"}}, SWITCH, CHAT)
    assert out["reasoning"] == {"summary": "auto"} and out["chat_template_kwargs"]["thinking"] is True


def test_the_default_sets_both_names_unless_the_client_chose() -> None:
    rules = RequestShaping(thinking_switch=True, thinking_default=False)
    assert shape({"model": "m"}, rules, CHAT)["chat_template_kwargs"] == {
        "enable_thinking": False,
        "thinking": False,
    }
    assert shape({"model": "m", "reasoning_effort": "medium"}, rules, CHAT)["chat_template_kwargs"] == {
        "enable_thinking": True,
        "thinking": True,
    }
    chosen = {"model": "m", "chat_template_kwargs": {"thinking": True}}
    assert shape(chosen, rules, CHAT) is chosen  # nothing to change: the very same object


def test_the_switch_is_the_chat_templates_only() -> None:
    rules = RequestShaping(thinking_switch=True, thinking_default=False)
    for route in ("/v1/completions", "/v1/responses"):
        body = {"model": "m", "reasoning": {"effort": "high"}}
        assert shape(body, rules, route) is body


def test_the_shipped_thinking_models_carry_the_reference_mapping(
    catalog_rules: dict[str, RequestShaping],
) -> None:
    binary = {
        "huihui-qwen3.6-27b-abliterated",
        "qwen3.6-27b-fp8",
        "qwen3.6-27b-fp8-mtp",
        "qwen3.6-35b-a3b-fp8",
        "qwen3.6-35b-a3b-fp8-mtp",
    }
    non_thinking = binary | {
        "glm-4.7-flash-awq",
        "nemotron-3-nano-30b-nvfp4",
        "huihui-qwen3.5-35b-a3b-abliterated",
        "qwen3.5-122b-a10b-int4-autoround",
    }
    assert {m for m, r in catalog_rules.items() if r.thinking_switch} == binary
    assert {m for m, r in catalog_rules.items() if r.thinking_default is False} == non_thinking
    assert not any("chat_template_kwargs" in r.defaults for r in catalog_rules.values())
