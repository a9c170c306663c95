"""The wire parser under hostile input: every bad message raises WireError with a reason.

``wire.parse`` is what a node runs on every frame a member sends (``daemon/handlers.py`` passes
the frames after the routing id); whatever arrives, it must answer with :class:`WireError` (which
the node turns into an ``error`` reply) — never another exception, never a crash, and in bounded
time and memory. What the node does with messages the parser accepts is tested against a real
node in ``tests/integration/test_node_security.py``.
"""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pythagoras_p2p.net.wire import (
    _MAX_FRAMES,
    _MAX_HEADER,
    PROTOCOL_VERSION,
    SCHEMAS,
    Message,
    WireError,
    build,
    bundle,
    parse,
    unbundle,
)

ADDRESS = "ab" * 32

#: A valid value of each field kind (as it travels in the header).
VALID_FIELD = {"hex": ADDRESS, "hexes": [ADDRESS, "cd" * 32], int: 0, str: "text", list: [1]}


def valid_header(op: str) -> dict:
    header = {"v": PROTOCOL_VERSION, "op": op, "id": 7}
    for name, kind in SCHEMAS[op].items():
        header[name] = VALID_FIELD[kind]
    return header


def frames_of(header, *bodies: bytes) -> list:
    return [json.dumps(header).encode(), *bodies]


def rejects(frames: list, *words: str) -> WireError:
    """Parse ``frames``, expecting WireError whose message has ``words``; return it."""
    with pytest.raises(WireError) as info:
        parse(frames)
    message = str(info.value)
    assert message, "a WireError without a reason"
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return info.value


def parses_or_rejects(frames: list) -> Message | None:
    """What any input may do: parse into a Message, or raise WireError with a reason."""
    try:
        msg = parse(frames)
    except WireError as exc:
        assert str(exc)
        return None
    assert isinstance(msg, Message)
    assert msg.op in SCHEMAS
    return msg


# --------------------------------------------------------------------------- the valid baseline


@pytest.mark.parametrize("op", sorted(SCHEMAS))
def test_every_operation_built_here_parses(op):
    header = valid_header(op)
    fields = {k: v for k, v in header.items() if k not in ("v", "op", "id")}
    msg = parse(build(op, 7, [b"body"], **fields))
    assert (msg.op, msg.id, msg.bodies) == (op, 7, [b"body"])


def test_messages_bundled_come_back_whole_and_in_order():
    messages = [build("ok", i, [b"x" * i] * (i % 3)) for i in range(700)]  # > one bundle's frames
    bundles = bundle(messages)
    assert len(bundles) == 2 and all(len(b) <= _MAX_FRAMES for b in bundles)
    carried = [m for b in bundles for m in unbundle(parse(b))]
    assert [(parse(m).id, parse(m).bodies) for m in carried] == [
        (i, [b"x" * i] * (i % 3)) for i in range(700)]
    assert bundle(messages[:1]) == messages[:1]  # one message goes as it is


@pytest.mark.parametrize("counts", [[], [0, 2], [1, 1, 1], [3], ["1", 1], [True, 1], [-1, 3]])
def test_a_bundle_whose_counts_do_not_match_its_frames_is_rejected(counts):
    frames = build("many", 0, [b"{}", b"{}"], counts=counts)
    with pytest.raises(WireError, match="counts"):
        unbundle(parse(frames))


def test_unknown_header_fields_are_ignored():
    header = valid_header("ping") | {"from_a_newer_peer": {"nested": [1, 2, 3]}}
    assert parse(frames_of(header)).op == "ping"


# --------------------------------------------------------------------------- framing


def test_no_frames_at_all():
    rejects([], "frames")


def test_too_many_frames():
    rejects([frames_of(valid_header("ping"))[0]] + [b""] * _MAX_FRAMES, "frames")


def test_an_empty_header_frame():
    rejects([b""], "JSON")


def test_an_empty_header_frame_before_bodies():
    rejects([b"", b"body"], "JSON")


@pytest.mark.parametrize("op", sorted(SCHEMAS))
def test_every_truncation_of_a_valid_header(op):
    raw = frames_of(valid_header(op))[0]
    for cut in range(len(raw)):
        rejects([raw[:cut]])


def test_an_oversized_header_is_refused_before_it_is_decoded():
    raw = json.dumps(valid_header("ping") | {"pad": "x" * _MAX_HEADER}).encode()
    rejects([raw], "larger than")


def test_a_header_of_whitespace_only():
    rejects([b" " * 1000], "JSON")


# --------------------------------------------------------------------------- the header's JSON


@pytest.mark.parametrize("raw", [
    b'{"v":1,"op":"\xff\xfe"}',                 # not UTF-8
    b'\xff\xfe\xfd',
    b'{"v":1,"op":"ping"',                      # unterminated
    b'{"v":1,"op":"ping"}}',                    # trailing garbage
    b'{"v":1,"op":"ping"} x',
    b"{'v':1,'op':'ping'}",                     # not JSON quotes
    b'\x00' * 64,
])
def test_headers_that_are_not_utf8_json(raw):
    rejects([raw], "JSON")


@pytest.mark.parametrize("value", ['"ping"', "[1, 2]", "null", "1", "true", '"{}"'])
def test_headers_that_are_json_but_not_an_object(value):
    rejects([value.encode()], "not a JSON object")


@pytest.mark.parametrize("opening", ["[", '{"a":', '[{"a":'])
def test_nesting_depth_bombs_within_the_size_limit(opening):
    depth = (_MAX_HEADER - 16) // len(opening)
    raw = (opening * depth).encode()
    started = time.monotonic()
    rejects([raw])
    assert time.monotonic() - started < 5


def test_a_deep_but_closed_structure_in_an_ignored_field():
    depth = 50_000
    raw = (b'{"v":1,"op":"ping","x":' + b"[" * depth + b"]" * depth + b"}")
    assert len(raw) < _MAX_HEADER
    parses_or_rejects([raw])  # deep enough to exceed the recursion limit: a WireError, no crash


def test_a_number_too_long_to_convert():
    raw = b'{"v":1,"op":"get","id":1,"address":"' + ADDRESS.encode() + b'","offset":' + b"9" * 10_000 + b"}"
    rejects([raw], "JSON")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_in_integer_fields(constant):
    raw = (b'{"v":%d,"op":"get","id":1,"address":"' % PROTOCOL_VERSION + ADDRESS.encode()
           + b'","offset":' + constant.encode() + b"}")
    rejects([raw], "offset")


# --------------------------------------------------------------------------- version, op, id


@pytest.mark.parametrize("version", [None, 0, PROTOCOL_VERSION - 1, -1, PROTOCOL_VERSION + 1, "1",
                                     [1], {"v": 1}, 10**30, str(PROTOCOL_VERSION), True])
def test_a_wrong_protocol_version(version):
    header = valid_header("ping")
    if version is None:
        del header["v"]
    else:
        header["v"] = version
    error = rejects(frames_of(header), "protocol version")
    assert error.code == "protocol"


@pytest.mark.parametrize("version", [True, 1.0])
def test_a_protocol_version_of_the_wrong_type(version):
    rejects(frames_of(valid_header("ping") | {"v": version}), "protocol version")


@pytest.mark.parametrize("op", [None, "", "PING", "ping ", "run\x00", "__class__", "unknown",
                                1, 1.5, True, ["ping"], {"op": "ping"}])
def test_an_unknown_or_mistyped_operation(op):
    header = valid_header("ping")
    if op is None:
        del header["op"]
    else:
        header["op"] = op
    rejects(frames_of(header), "unknown operation")


@pytest.mark.parametrize("request_id", ["7", 7.0, True, None, [7], {"id": 7}])
def test_a_request_id_that_is_not_an_integer(request_id):
    rejects(frames_of(valid_header("ping") | {"id": request_id}), "request id")


# --------------------------------------------------------------------------- typed fields


def _fields():
    return [(op, name, kind) for op in sorted(SCHEMAS) for name, kind in SCHEMAS[op].items()]


WRONG_VALUES = {
    "hex": ["", "ab", "ab" * 31, "ab" * 33, "g" * 64, "zz" * 32, "ab" * 31 + "a",
            "é" * 64, 1, None, True, [ADDRESS], {"a": ADDRESS}, "0x" + "ab" * 31],
    "hexes": [ADDRESS, "", None, 1, {"a": ADDRESS}, [ADDRESS, "nothex"], [ADDRESS, None],
              [[ADDRESS]], ["ab" * 33], [1, 2, 3]],
    int: [-1, -(2**63), "0", "1", 1.0, 0.5, True, False, None, [0], {"n": 0}],
    str: [1, None, True, ["text"], {"t": "text"}, 1.5],
    list: [1, None, "1", {"c": 1}, 1.5, True],
}


@pytest.mark.parametrize(("op", "name", "kind"), _fields())
def test_each_field_missing(op, name, kind):
    header = valid_header(op)
    del header[name]
    rejects(frames_of(header), op, repr(name))


@pytest.mark.parametrize(("op", "name", "kind"), _fields())
def test_each_field_with_wrong_values(op, name, kind):
    for value in WRONG_VALUES[kind]:
        header = valid_header(op) | {name: value}
        with pytest.raises(WireError) as info:
            parse(frames_of(header))
        assert repr(name) in str(info.value), (value, str(info.value))


def test_a_list_of_addresses_above_its_limit():
    # 100,001 addresses do not fit in one header: the size check answers first.
    header = valid_header("lookup") | {"calls": [ADDRESS] * 100_001}
    rejects(frames_of(header), "larger than")


@pytest.mark.parametrize("value", ["ab" * 31 + "  ", "ab " * 21 + " ", " " + "ab" * 31 + " "])
def test_a_hex_field_with_whitespace_is_not_an_address(value):
    assert len(value) == 64
    rejects(frames_of(valid_header("get") | {"address": value}), "'address'")


@pytest.mark.parametrize("offset", [2**63, 10**300], ids=["2**63", "10**300"])
def test_an_offset_no_file_can_have(offset):
    rejects(frames_of(valid_header("get") | {"offset": offset}), "'offset'")


def test_uppercase_hex_is_the_same_address():
    msg = parse(frames_of(valid_header("get") | {"address": ADDRESS.upper()}))
    assert msg.hex("address") == bytes.fromhex(ADDRESS)


# --------------------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=512), min_size=1, max_size=4))
def test_random_bytes(frames):
    parses_or_rejects(frames)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_after_a_valid_prefix(tail):
    parses_or_rejects([b'{"v":1,"op":"run","id":1,' + tail])


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_random_json_headers(value):
    parses_or_rejects([json.dumps(value).encode()])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_fields()), json_values)
def test_a_random_value_in_a_typed_field(field, value):
    op, name, kind = field
    msg = parses_or_rejects(frames_of(valid_header(op) | {name: value}))
    if msg is None:
        return
    # Accepted: then the value is of the field's kind, and usable as such.
    if kind == "hex":
        assert len(msg.hex(name)) == 32
    elif kind == "hexes":
        assert all(len(a) == 32 for a in msg.hexes(name))
    elif kind is int:
        assert type(value) is int and value >= 0
    else:
        assert isinstance(value, kind)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "op", "id", "address", "offset", "total", "calls",
                                        "fp", "call", "label", "code", "message"]),
                       json_values, max_size=8),
       st.sampled_from(sorted(SCHEMAS)))
def test_random_fields_under_a_known_operation(fields, op):
    parses_or_rejects(frames_of(fields | {"v": PROTOCOL_VERSION, "op": op}))


# --------------------------------------------------------------------------- bounded work


def _worst_inputs() -> dict[str, list]:
    """Hostile messages at the size limits."""
    many = ["ab" * 32] * ((_MAX_HEADER - 100) // 67)
    return {
        "array bomb": [b"[" * (_MAX_HEADER - 1)],
        "object bomb": [b'{"a":' * ((_MAX_HEADER - 1) // 5)],
        "max addresses": frames_of(valid_header("lookup") | {"calls": many}),
        "max addresses, last bad": frames_of(valid_header("lookup") | {"calls": many[:-1] + ["x" * 64]}),
        "long digits": [b'{"v":1,"op":"ping","n":' + b"1" * (_MAX_HEADER - 40) + b"}"],
        "long string": [b'{"v":1,"op":"ping","s":"' + b"\\u0041" * ((_MAX_HEADER - 40) // 6) + b'"}'],
        "max frames": [frames_of(valid_header("ping"))[0]] + [b"x"] * (_MAX_FRAMES - 1),
        "oversized": [b" " * (64 * 1024 * 1024)],
    }


@pytest.mark.parametrize("name", sorted(_worst_inputs()))
def test_hostile_messages_at_the_limits_take_bounded_time_and_memory(name):
    frames = _worst_inputs()[name]
    size = sum(len(f) for f in frames)
    tracemalloc.start()
    try:
        started = time.monotonic()
        parses_or_rejects(frames)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 5, f"{name}: {elapsed:.1f}s"
    # Decoded JSON takes a multiple of its text; an oversized frame is never copied.
    assert peak < 64 * min(size, _MAX_HEADER) + (1 << 20), f"{name}: peak {peak} bytes"
