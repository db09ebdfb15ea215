"""protocol.schema.json and the stdlib validator: the subset works, the schema agrees with
the SDK's own message builders, and init/metadata carry the protocol version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toru_plugin_api import schema
from toru_plugin_api.codec import ProtocolError
from toru_plugin_api.messages import (
    HOST_CAPABILITIES,
    PROTOCOL_VERSION,
    HttpRequest,
    HttpResponse,
    KvOp,
    PluginMetadata,
    host_init,
    http_request_message,
    http_response_message,
    kv_request_message,
    kv_response_message,
    lifecycle_shutdown,
)

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- the validator


@pytest.mark.parametrize(
    ("value", "sch", "problem"),
    [
        ("x", {"type": "integer"}, '$: expected integer, got "x"'),
        (True, {"type": "integer"}, "$: expected integer, got true"),
        (None, {"type": ["string", "null"]}, None),
        ({}, {"type": "object", "required": ["id"]}, "$: missing 'id'"),
        ({"a": 1}, {"properties": {"a": {"type": "string"}}}, "$.a: expected string, got 1"),
        ({"b": 1}, {"additionalProperties": False}, "$.b: unknown key"),
        ({"b": 1}, {"additionalProperties": {"type": "string"}}, "$.b: expected string, got 1"),
        ("c", {"enum": ["a", "b"]}, '$: must be one of "a", "b", got "c"'),
        ("a/b", {"pattern": "^[a-z]+$"}, '$: "a/b" does not match ^[a-z]+$'),
        ("abcd", {"maxLength": 3}, "$: longer than 3 characters (4)"),
        ("", {"minLength": 1}, "$: shorter than 1 characters"),
        (700, {"maximum": 599}, "$: 700 is greater than the maximum 599"),
        (99, {"minimum": 100}, "$: 99 is less than the minimum 100"),
        ([1, "x"], {"items": {"type": "integer"}}, '$[1]: expected integer, got "x"'),
        (
            {"h": {"k": 2}},
            {
                "$defs": {"s": {"type": "string"}},
                "properties": {"h": {"properties": {"k": {"$ref": "#/$defs/s"}}}},
            },
            "$.h.k: expected string, got 2",
        ),
    ],
)
def test_each_keyword_of_the_subset(value, sch, problem):
    assert schema.errors(value, sch) == ([problem] if problem else [])


def test_the_shipped_schema_uses_only_keywords_the_validator_implements():
    annotations = {"$schema", "$id", "$defs", "title", "description"}

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if path.endswith(".properties") or path.endswith("$defs"):
                    walk(value, f"{path}.{key}")  # names, not keywords
                    continue
                assert key in schema.KEYWORDS | annotations, f"{path}: {key}"
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, path)

    walk(schema.load(), "")


def test_docs_ship_the_same_schema():
    docs = ROOT / "docs" / "plugins" / "protocol.schema.json"
    assert json.loads(docs.read_text()) == schema.load()


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize(
    ("name", "msg"),
    [
        ("lifecycle_init", host_init("iid", "/run/p.sock", "/var/log/p.log")),
        ("lifecycle_shutdown", lifecycle_shutdown()),
        ("http_request", http_request_message("r1", HttpRequest("GET", "/x?y=1", {"A": "b"}))),
        ("http_request", http_request_message("r2", HttpRequest("POST", "/", {}, b"\xff\x00"))),
        ("http_reply", http_response_message("r1", HttpResponse(201, {"A": "b"}, "ok"))),
        ("http_reply", http_response_message("r1", HttpResponse(200, {}, b"\xff"))),
        ("kv_request", kv_request_message("k1", KvOp("set", "count", "3"))),
        ("kv_request", kv_request_message("k2", KvOp("list", prefix="user:"))),
        ("kv_reply", kv_response_message("k1", "3")),
        ("kv_reply", kv_response_message("k2", ["a", "b"])),
        ("kv_reply", kv_response_message("k3", error="value too large")),
    ],
)
def test_the_sdks_messages_match_the_schema(name, msg):
    schema.validate(msg, name)
    schema.validate(msg, "envelope")


def test_a_reply_without_status_or_with_an_integer_id_is_valid():
    schema.validate({"type": "http", "request_id": 7, "payload": {"body": "x"}}, "http_reply")


def test_bad_metadata_is_named_by_path():
    with pytest.raises(schema.SchemaError) as err:
        schema.validate({"id": "x", "name": "", "version": "1", "route": "/a/b"}, "metadata")
    assert err.value.problems == [
        "$.name: shorter than 1 characters",
        '$.route: "/a/b" does not match ^/(?!.*\\.\\.)[^/%?#\\\\]+$',
    ]


def test_icon_is_optional_in_schema_and_code():
    md = {"id": "x", "name": "X", "version": "1", "route": "/x"}
    schema.validate(md, "metadata")
    assert PluginMetadata.from_json(md).icon == ""


# --------------------------------------------------------------------------- versions


def test_init_carries_protocol_version_and_capabilities():
    payload = host_init("iid", "/s", "/l")["payload"]
    assert payload["action"] == "init"
    assert payload["protocol_version"] == PROTOCOL_VERSION == 1
    assert payload["capabilities"] == list(HOST_CAPABILITIES) == ["kv", "binary_bodies"]
    assert host_init("iid", "/s", "/l", capabilities=())["payload"]["capabilities"] == []


def test_metadata_protocol_defaults_to_1_and_a_newer_one_is_refused():
    base = {"id": "x", "name": "X", "version": "1", "route": "/x"}
    assert PluginMetadata.from_json(base).protocol == 1
    assert "protocol" not in PluginMetadata.from_json(base).to_json()
    assert PluginMetadata.from_json({**base, "protocol": 1}).protocol == 1
    with pytest.raises(
        ProtocolError, match="protocol 2 is newer than this host's \\(1\\): upgrade Toru"
    ):
        PluginMetadata.from_json({**base, "protocol": 2})
    with pytest.raises(ProtocolError, match="protocol must be a positive integer, got '1'"):
        PluginMetadata.from_json({**base, "protocol": "1"})


def test_metadata_capabilities_are_a_list_of_strings():
    base = {"id": "x", "name": "X", "version": "1", "route": "/x"}
    md = PluginMetadata.from_json({**base, "capabilities": ["binary_bodies", "future-thing"]})
    assert md.binary_bodies and md.to_json()["capabilities"] == ["binary_bodies", "future-thing"]
    assert not PluginMetadata.from_json(base).binary_bodies
    assert "capabilities" not in PluginMetadata.from_json(base).to_json()
    for bad in ("binary_bodies", [1], {"binary_bodies": True}):
        with pytest.raises(ProtocolError, match="capabilities must be a list of strings"):
            PluginMetadata.from_json({**base, "capabilities": bad})
    schema.validate({**base, "capabilities": ["binary_bodies"]}, "metadata")
    with pytest.raises(schema.SchemaError):
        schema.validate({**base, "capabilities": "binary_bodies"}, "metadata")
