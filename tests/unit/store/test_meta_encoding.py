"""A result's metadata is stored as the compact JSON of its dict, whichever way it is encoded."""

import json
import random

import pytest

from pythagoras_p2p.store.records import _compact_json, encode_meta, result_meta


@pytest.mark.parametrize("seed", range(5))
def test_the_fast_encoding_is_the_json_of_the_dict(seed):
    rng = random.Random(seed)
    for _ in range(400):
        meta = result_meta(rng.choice(["f", "ünïcode", 'q"uote\\', "x" * 50]), rng.randbytes(32),
                           1.7e9 * rng.random(), rng.random() * 10.0 ** rng.randint(-9, 3),
                           worker=rng.choice(["vm/w0", "é/w1", "caller"]))
        assert encode_meta(meta) == _compact_json(meta).encode()
        assert json.loads(encode_meta(meta)) == meta


@pytest.mark.parametrize("meta", [
    result_meta("f", b"1" * 32, 1.0, float("nan"), worker="w"),  # not finite: JSON's NaN
    result_meta("f", b"1" * 32, 1.0, 0.5, worker="w", extra=[1, 2]),  # keys of its own
    {"duration": 0.0},
    {},
])
def test_other_metadata_is_encoded_whole(meta):
    assert encode_meta(meta) == _compact_json(meta).encode()


@pytest.mark.parametrize("extra", [
    {"args": {"x": "00ff00ff00ff00ff", "ü": "0102030405060708"}},
    {"inputs": {"env": {"HOME": None}}, "args": {}},
])
def test_keys_after_the_fixed_ones_keep_the_fast_encoding_exact(extra):
    meta = {**result_meta("f", b"1" * 32, 1.5, 0.25, worker="w"), **extra}
    assert encode_meta(meta) == _compact_json(meta).encode()
    assert json.loads(encode_meta(meta)) == meta
