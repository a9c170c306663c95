"""Outcomes of tasks: their wire form both ways, pickling, and the exceptions they stand for."""

from __future__ import annotations

import json
import pickle

import pytest

from pythagoras_p2p.errors import (
    PythagorasError,
    RemoteError,
    RequirementsError,
    WorkerCrashedError,
)
from pythagoras_p2p.execution.outcomes import (
    CLOSED,
    REMOTE,
    REQUIREMENTS,
    UNREACHABLE,
    Crashed,
    Failed,
    Ok,
    Refused,
    RemoteTraceback,
    Stored,
    failure_outcome,
    rebuild_exception,
)
from pythagoras_p2p.net import wire
from pythagoras_p2p.net.outcomes_wire import MAX_FAILURE, outcome_from_reply, outcome_to_wire
from pythagoras_p2p.net.rpc import NodeUnreachable

CALL = b"\x01" * 32
ADDRESS = b"\x02" * 32
META = {"function": "f", "duration": 0.25, "worker": "host/w0"}


def _frames(outcome, request_id: int = 7) -> list:
    bodies, fields = outcome_to_wire(outcome)
    return wire.build("result", request_id, bodies, call=CALL, **fields)


def _over_the_wire(outcome, where: str = "10.0.0.2:5555"):
    return outcome_from_reply(wire.parse(_frames(outcome)), where)


def _raised(exc: BaseException) -> Failed:
    try:
        raise exc
    except BaseException as caught:
        return failure_outcome(caught, "host/w1")


# ---------------------------------------------------------------------- the codec, both ways

@pytest.mark.parametrize("outcome", [
    Ok(ADDRESS, b"packed value", META),
    Ok(ADDRESS, None, META),  # a large value: it stays on the node until fetched
    Failed(b"pickled", "ValueError", "bad x", "Traceback ...\nValueError: bad x\n", "host/w1"),
    Failed(None, "mod.Unpicklable", "no", "Traceback ...", "host/w1"),
    Crashed("f(x=1) killed the worker process running it on 3 attempts"),
], ids=["ok", "ok-large", "err", "err-unpickled", "crash"])
def test_each_outcome_that_travels_comes_back_the_same(outcome):
    assert _over_the_wire(outcome) == outcome


def test_the_wire_form_of_results_is_unchanged_since_protocol_1():
    """The header and bodies each kind of result had before outcomes were types (protocol 2
    added operations between nodes; a result reads as it did, under its version number)."""
    def header(frames):
        return json.loads(frames[0])

    frames = _frames(Ok(ADDRESS, b"v", {"duration": 0.5}))
    assert frames[0] == (b'{"v":%d,"op":"result","id":7,"call":"' % wire.PROTOCOL_VERSION
                         + CALL.hex().encode()
                         + b'","status":"ok","address":"' + ADDRESS.hex().encode()
                         + b'","large":false,"meta":{"duration":0.5}}')
    assert frames[1:] == [b"v"]
    frames = _frames(Ok(ADDRESS, None, wire.RawJSON(b'{"duration":0.5}')))
    assert header(frames)["large"] is True and header(frames)["meta"] == {"duration": 0.5}
    assert frames[1:] == []
    frames = _frames(Failed(None, "ValueError", "m" * 3000, "tb", "h/w0"))
    assert header(frames) == {"v": wire.PROTOCOL_VERSION, "op": "result", "id": 7, "call": CALL.hex(), "status": "err",
                              "type": "ValueError", "message": "m" * 2000, "where": "h/w0"}
    assert frames[1:] == [b"", b"tb"]
    frames = _frames(Crashed("boom"))
    assert header(frames) == {"v": wire.PROTOCOL_VERSION, "op": "result", "id": 7, "call": CALL.hex(),
                              "status": "crash", "message": "boom"}
    assert frames[1:] == []


def test_a_huge_failure_is_cut_to_fit_one_message():
    bodies, _ = outcome_to_wire(Failed(b"p" * (MAX_FAILURE + 1), "E", "m", "t" * (3 * MAX_FAILURE), "w"))
    assert bodies[0] == b""  # the client rebuilds a RemoteError from type and message
    assert len(bodies[1]) < MAX_FAILURE + 100 and b"[... traceback shortened ...]" in bodies[1]


def test_outcomes_made_by_the_caller_have_no_wire_form():
    for outcome in (Refused(REMOTE, "no"), Stored(42)):
        with pytest.raises(TypeError, match="no wire form"):
            outcome_to_wire(outcome)


def test_a_failure_without_where_is_placed_on_the_peer():
    frames = _frames(Failed(None, "E", "m", "t", "h/w0"))
    header = json.loads(frames[0])
    del header["where"], header["type"]
    outcome = outcome_from_reply(wire.parse([json.dumps(header).encode(), *frames[1:]]), "peer:1")
    assert outcome == Failed(None, "Exception", "m", "t", "peer:1")


# ---------------------------------------------------------------------- hostile replies

def _reply(fields: dict, bodies: tuple = ()) -> wire.Message:
    return wire.parse(wire.build("result", 3, list(bodies), call=CALL, **fields))


_ok = {"status": "ok", "address": ADDRESS.hex(), "large": False, "meta": {}}


@pytest.mark.parametrize("fields, bodies, problem", [
    ({"status": "ok", "large": True}, (), "'address' is missing"),
    ({**_ok, "address": "zz"}, (b"v",), "'address' is missing or not an address"),
    ({**_ok, "address": 5}, (b"v",), "not an address"),
    ({**_ok, "meta": [1, 2]}, (b"v",), "'meta' is a list"),
    ({**_ok, "large": "yes"}, (b"v",), "'large' is a str"),
    (_ok, (), "needs the value as a body frame"),
    ({"status": "err", "type": "E", "message": "m", "where": "w"}, (b"",), "two body frames"),
    ({"status": "err", "type": 3, "message": "m", "where": "w"}, (b"", b""), "'type' is a int"),
    ({"status": "err", "type": "E", "message": None, "where": "w"}, (b"", b""), "'message' is a NoneType"),
    ({"status": "crash", "message": {"a": 1}}, (), "'message' is a dict"),
    ({"status": "finished"}, (), "unknown status 'finished'"),
], ids=["no-address", "bad-address", "address-type", "meta-type", "large-type", "no-body",
        "err-bodies", "type-type", "message-type", "crash-message", "status"])
def test_a_malformed_result_raises_a_wire_error_naming_the_problem(fields, bodies, problem):
    with pytest.raises(wire.WireError, match=problem):
        outcome_from_reply(_reply(fields, bodies), "peer:1")


def test_a_reply_that_is_not_a_result_is_refused_by_name():
    with pytest.raises(wire.WireError, match="expected a result, got a 'ok' reply"):
        outcome_from_reply(wire.parse(wire.build("ok", 3)), "peer:1")


# ---------------------------------------------------------------------- pickling (worker pipe)

@pytest.mark.parametrize("outcome", [
    Ok(ADDRESS, b"v", META), Ok(ADDRESS, None, META),
    Failed(b"p", "E", "m", "t", "w"), Stored([1, 2]), Crashed("c"), Refused(UNREACHABLE, "u"),
])
def test_outcomes_pickle_as_their_fields(outcome):
    data = pickle.dumps(outcome, protocol=5)
    assert pickle.loads(data) == outcome and type(pickle.loads(data)) is type(outcome)
    assert b"__setstate__" not in data and len(data) < 200


# ---------------------------------------------------------------------- the exceptions they stand for

def test_a_failure_rebuilds_the_exception_with_its_remote_traceback():
    exc = rebuild_exception(_raised(ValueError("bad x")), "f(x=1)")
    assert type(exc) is ValueError and str(exc) == "bad x"
    assert isinstance(exc.__cause__, RemoteTraceback) and "ValueError: bad x" in exc.__cause__.text
    assert any("raised by f(x=1) on host/w1" in note for note in exc.__notes__)


def test_a_failure_that_cannot_be_unpickled_is_a_remote_error():
    exc = rebuild_exception(Failed(None, "mod.Strange", "odd", "Traceback ...", "host/w1"), "f(x=1)")
    assert type(exc) is RemoteError and exc.remote_type == "mod.Strange"
    assert "f(x=1) raised mod.Strange: odd (on host/w1" in str(exc)


def test_a_system_exit_fails_its_call_only():
    exc = rebuild_exception(_raised(SystemExit(3)), "f(x=1)")
    assert type(exc) is RemoteError and isinstance(exc.__cause__, SystemExit)
    assert "f(x=1) raised SystemExit(3) on host/w1" in str(exc)


@pytest.mark.parametrize("outcome, cls", [
    (Crashed("killed its worker"), WorkerCrashedError),
    (Refused(REQUIREMENTS, "no peer satisfies requires="), RequirementsError),
    (Refused(UNREACHABLE, "no node could take the call"), NodeUnreachable),
    (Refused(REMOTE, "node refused a value"), PythagorasError),
    (Refused(CLOSED, "the cloud was closed"), PythagorasError),
], ids=["crash", "requirements", "unreachable", "remote", "closed"])
def test_crashes_and_refusals_raise_their_error(outcome, cls):
    exc = rebuild_exception(outcome, "f(x=1)")
    assert type(exc) is cls and str(exc) == outcome.message


def test_a_success_is_not_an_exception():
    with pytest.raises(TypeError, match="not the outcome of a failed call"):
        rebuild_exception(Ok(ADDRESS, b"v", META), "f(x=1)")
