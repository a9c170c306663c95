"""Member keys, certificates and the signed member list: what verifies and what does not."""

from __future__ import annotations

import json
import os
import stat

import pytest

from pythagoras_p2p.errors import SecurityError
from pythagoras_p2p.trust import Member, Members, NodeKeys, SwarmSigningKey, Trust, verify_signature


def certify(keys: NodeKeys, swarm_public: bytes, issuer: str, sign, *, roles=("node",),
            hostname="h", node_id="n1") -> Member:
    return Member.certify(node_id=node_id, hostname=hostname, owner="ann", roles=roles,
                          curve_public=keys.curve_public, signing_public=keys.signing_public,
                          swarm_public=swarm_public, issuer=issuer, sign=sign)


@pytest.fixture
def swarm(tmp_path):
    """A swarm's signing key, its first admin's keys and the list of one admin."""
    root = SwarmSigningKey.create(tmp_path / "admin")
    admin = NodeKeys.load_or_create(tmp_path / "admin")
    cert = certify(admin, root.public, "swarm", root.sign, roles=("admin", "node"), hostname="a")
    return root, admin, Members.first("team", root, cert)


def test_keys_are_made_once_private_and_kept(tmp_path):
    old = os.umask(0)
    try:
        keys = NodeKeys.load_or_create(tmp_path)
    finally:
        os.umask(old)
    path = NodeKeys.path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = NodeKeys.load_or_create(tmp_path)
    assert again == keys and again.key_id == keys.key_id and len(keys.key_id) == 16
    assert NodeKeys.load_or_create(tmp_path / "other").key_id != keys.key_id


def test_a_damaged_key_file_is_refused_naming_the_fix(tmp_path):
    keys = NodeKeys.load_or_create(tmp_path)
    data = json.loads(NodeKeys.path(tmp_path).read_text())
    data["curve_public"] = NodeKeys.generate().curve_public.decode()  # another key's half
    NodeKeys.path(tmp_path).write_text(json.dumps(data))
    with pytest.raises(SecurityError, match="join"):
        NodeKeys.load(tmp_path)
    assert keys is not None


def test_signatures_verify_only_for_their_key_and_data(tmp_path):
    keys = NodeKeys.load_or_create(tmp_path)
    signature = keys.sign(b"result")
    assert verify_signature(keys.signing_public, b"result", signature)
    assert not verify_signature(keys.signing_public, b"resulT", signature)
    assert not verify_signature(NodeKeys.generate().signing_public, b"result", signature)
    assert not verify_signature(b"short", b"result", signature)


def test_the_first_admin_is_admitted_and_a_stranger_is_not(swarm):
    root, admin, members = swarm
    assert members.is_admitted(admin.key_id)
    assert members.by_key_id(admin.key_id).is_admin
    assert not members.is_admitted(NodeKeys.generate().key_id)
    assert members.by_key_id("0" * 16) is None


def test_a_member_certified_by_an_admin_is_admitted_and_survives_json(swarm, tmp_path):
    root, admin, members = swarm
    newcomer = NodeKeys.load_or_create(tmp_path / "b")
    cert = certify(newcomer, root.public, admin.key_id, admin.sign, hostname="b", node_id="n2")
    grown = members.with_member(cert, admin.key_id, admin.sign)
    assert grown.version == members.version + 1 and grown.is_admitted(newcomer.key_id)
    copy = Members.loads(grown.dumps(), anchor=root.public)
    assert copy.is_admitted(newcomer.key_id) and copy.by_key_id(newcomer.key_id).hostname == "b"
    assert copy.newer_than(members) and not members.newer_than(copy)


def test_a_certificate_signed_by_a_non_admin_does_not_count(swarm, tmp_path):
    root, admin, members = swarm
    plain = NodeKeys.load_or_create(tmp_path / "b")
    grown = members.with_member(certify(plain, root.public, admin.key_id, admin.sign,
                                        node_id="n2"), admin.key_id, admin.sign)
    third = NodeKeys.load_or_create(tmp_path / "c")
    minted = certify(third, root.public, plain.key_id, plain.sign, node_id="n3")
    listed = grown.with_member(minted, admin.key_id, admin.sign)
    assert not listed.is_admitted(third.key_id)
    with pytest.raises(SecurityError, match="not an admin"):  # nor may it sign a list
        grown.with_member(minted, plain.key_id, plain.sign)


def test_a_tampered_list_or_certificate_is_refused(swarm, tmp_path):
    root, admin, members = swarm
    data = members.to_json()
    data["version"] += 5
    with pytest.raises(SecurityError, match="bad signature"):
        Members.from_json(data)
    data = members.to_json()
    data["members"][0]["roles"] = ["admin", "node", "client"]
    with pytest.raises(SecurityError):
        Members.from_json(data)
    other = SwarmSigningKey.create(tmp_path / "elsewhere")
    with pytest.raises(SecurityError, match="another swarm"):
        Members.from_json(members.to_json(), anchor=other.public)


def test_a_revoked_member_is_no_longer_admitted(swarm, tmp_path):
    root, admin, members = swarm
    leaving = NodeKeys.load_or_create(tmp_path / "b")
    grown = members.with_member(certify(leaving, root.public, admin.key_id, admin.sign,
                                        node_id="n2", hostname="laptop"), admin.key_id, admin.sign)
    removed = grown.without([leaving.key_id], admin.key_id, admin.sign)
    assert not removed.is_admitted(leaving.key_id) and removed.is_revoked(leaving.key_id)
    assert removed.by_key_id(leaving.key_id) is not None  # kept for the record
    assert removed.find("laptop")[0].key_id == leaving.key_id
    assert Members.loads(removed.dumps()).admitted == removed.admitted


def test_a_home_takes_only_newer_lists_of_its_swarm(swarm, tmp_path):
    root, admin, members = swarm
    home = tmp_path / "admin"
    members.save(home)
    trust = Trust.load(home)
    assert trust.is_admin and trust.me.key_id == admin.key_id
    grown = members.with_member(certify(NodeKeys.generate(), root.public, admin.key_id,
                                        admin.sign, node_id="n2"), admin.key_id, admin.sign)
    assert trust.accept(grown) and not trust.accept(members)
    assert Members.load(home).version == grown.version
    later = grown.without([], admin.key_id, admin.sign)
    later.save(home)  # written by another process of the home (a CLI command)
    assert trust.reload() and trust.members.version == later.version


def test_a_node_joining_again_with_new_keys_replaces_its_old_ones(swarm, tmp_path):
    root, admin, members = swarm
    old, new = NodeKeys.generate(), NodeKeys.generate()
    first = members.with_member(certify(old, root.public, admin.key_id, admin.sign, node_id="n9"),
                                admin.key_id, admin.sign)
    again = first.with_member(certify(new, root.public, admin.key_id, admin.sign, node_id="n9"),
                              admin.key_id, admin.sign)
    assert again.is_admitted(new.key_id) and not again.is_admitted(old.key_id)
    assert again.by_node_id("n9").key_id == new.key_id


@pytest.mark.parametrize("damage", [b"\xff\xfe", b'{"swarm": {"na', b"[1]"])
def test_a_damaged_member_list_is_refused_naming_the_fix_and_kept(swarm, tmp_path, damage):
    home = tmp_path / "home"
    swarm[2].save(home)
    path = home / "trust" / "members.json"
    path.write_bytes(damage)
    with pytest.raises(SecurityError, match=r"not a valid member list.*join --force"):
        Members.load(home)
    assert path.read_bytes() == damage  # refused, not rewritten


@pytest.mark.parametrize("secret", ["AAAA", None])
def test_a_damaged_swarm_signing_key_is_refused_naming_the_fix(tmp_path, secret):
    SwarmSigningKey.create(tmp_path)
    SwarmSigningKey.path(tmp_path).write_text(json.dumps({"version": 1, "secret": secret}))
    with pytest.raises(SecurityError, match=r"not a valid swarm signing key.*init --force"):
        SwarmSigningKey.load(tmp_path)
