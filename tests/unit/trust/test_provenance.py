"""Results say who computed them: the signed ``computed_by`` of a result's metadata, and which
copies a node refuses."""

from __future__ import annotations

import json

import pytest

from pythagoras_p2p.store.listing import computed_by
from pythagoras_p2p.trust import Member, Members, NodeKeys, SwarmSigningKey
from pythagoras_p2p.trust.provenance import refusal, stamp

CALL, VALUE = b"c" * 32, b"v" * 32


def _cert(keys: NodeKeys, root: SwarmSigningKey, hostname: str, roles=("node",)) -> Member:
    return Member.certify(node_id=hostname, hostname=hostname, owner="ann", roles=roles,
                          curve_public=keys.curve_public, signing_public=keys.signing_public,
                          swarm_public=root.public, issuer="swarm", sign=root.sign)


@pytest.fixture
def swarm(tmp_path):
    """The swarm key, an admin's keys, a member's keys, and the list of both."""
    root = SwarmSigningKey.create(tmp_path / "admin")
    admin, member = NodeKeys.generate(), NodeKeys.generate()
    members = Members.first("team", root, _cert(admin, root, "a", ("admin", "node")))
    members = members.with_member(_cert(member, root, "m"), "swarm", root.sign)
    return root, admin, member, members


def test_a_members_result_is_kept_and_says_who_computed_it(swarm):
    _, _, member, members = swarm
    meta = stamp({"function": "m.f"}, CALL, VALUE, member)
    assert computed_by(meta)["key_id"] == member.key_id and computed_by(meta)["host"]
    assert refusal(json.loads(json.dumps(meta)), CALL, VALUE, members) is None  # as it travels


def test_copies_of_unknown_unsigned_or_altered_results_are_refused(swarm):
    _, _, member, members = swarm
    stranger = NodeKeys.generate()  # a valid key of its own, on no list
    assert "no member" in refusal(stamp({}, CALL, VALUE, stranger), CALL, VALUE, members)
    assert "no signature" in refusal({"function": "m.f"}, CALL, VALUE, members)
    meta = stamp({}, CALL, VALUE, member)
    assert "does not verify" in refusal(meta, CALL, b"w" * 32, members)  # another value
    assert "does not verify" in refusal(meta, b"d" * 32, VALUE, members)  # another call
    forged = {**meta, "computed_by": {**meta["computed_by"], "key_id": members.members[0].key_id}}
    assert "does not verify" in refusal(forged, CALL, VALUE, members)  # credited to another
    assert refusal({}, CALL, VALUE, None) is None  # no member list: nothing to tell apart


def test_dropping_a_members_results_travels_in_the_signed_list(swarm):
    root, admin, member, members = swarm
    revoked = members.without([member.key_id], "swarm", root.sign)
    assert revoked.dropped() == frozenset() and "drop_results" not in revoked.dumps()
    meta = stamp({}, CALL, VALUE, member)
    assert refusal(meta, CALL, VALUE, revoked) is None  # removed: its results stay valid
    dropped = revoked.without([member.key_id], "swarm", root.sign, drop_results=True)
    again = Members.loads(dropped.dumps(), anchor=root.public)  # as a peer receives it
    assert again.dropped() == {member.key_id} and again.version == members.version + 2
    assert "dropped" in refusal(meta, CALL, VALUE, again)
    assert refusal(stamp({}, CALL, VALUE, admin), CALL, VALUE, again) is None


def test_a_claim_is_signed_as_it_leaves_by_its_own_member_only(swarm):
    from pythagoras_p2p.trust.provenance import claim, vouch, vouch_raw

    _, admin, member, members = swarm
    claimed = claim({"function": "m.f"}, member)
    assert "no signature" in refusal(claimed, CALL, VALUE, members)  # not sent as it is
    assert refusal(vouch(claimed, CALL, VALUE, member), CALL, VALUE, members) is None
    assert "sig" not in claimed["computed_by"]  # the stored metadata is left as it was
    assert vouch(claimed, CALL, VALUE, admin) is claimed  # another member's claim: not ours
    raw = json.dumps(claimed).encode()
    assert refusal(json.loads(vouch_raw(raw, CALL, VALUE, member)), CALL, VALUE, members) is None
    assert vouch_raw(b'{"function":"m.f"}', CALL, VALUE, member) == b'{"function":"m.f"}'
