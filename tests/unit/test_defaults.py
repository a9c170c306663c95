"""Tunables read from the environment: sizes and counts, each malformed value a clear error."""

from __future__ import annotations

import pytest

from pythagoras_p2p.defaults import parse_size, store_cap, worker_memory_limit
from pythagoras_p2p.errors import ConfigurationError


@pytest.mark.parametrize("text, size", [("512M", 512 << 20), ("64G", 64 << 30), ("1TiB", 1 << 40),
                                        ("1.5K", 1536), ("4096", 4096), ("0", 0)])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["inf", "1e400", "-1G", "nan", "4Gb_", "", "G"])
def test_what_is_not_a_size(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("name, read", [("PYTHAGORAS_STORE_MAX_SIZE", store_cap),
                                        ("PYTHAGORAS_WORKER_MEMORY_LIMIT", worker_memory_limit)])
def test_a_malformed_size_variable_is_named_with_the_fix(monkeypatch, name, read):
    monkeypatch.setenv(name, "inf")
    with pytest.raises(ConfigurationError, match=f"{name}='inf' is not a size.*64G"):
        read()


def test_no_worker_memory_limit_unless_set(monkeypatch):
    monkeypatch.delenv("PYTHAGORAS_WORKER_MEMORY_LIMIT", raising=False)
    assert worker_memory_limit() is None
    monkeypatch.setenv("PYTHAGORAS_WORKER_MEMORY_LIMIT", "300M")
    assert worker_memory_limit() == 300 << 20


def test_every_interval_and_limit_can_be_set_from_the_environment():
    from helpers import run_python

    out = run_python(
        "from pythagoras_p2p import defaults\n"
        "from pythagoras_p2p.swarm import peers\n"
        "from pythagoras_p2p.store import journal\n"
        "print(defaults.PING_EVERY, peers.PING_EVERY, journal._SEGMENT_BYTES)\n",
        env={"PYTHAGORAS_PING_EVERY": "0.5", "PYTHAGORAS_JOURNAL_SEGMENT_BYTES": "1M"},
    )
    assert out.stdout.split() == ["0.5", "0.5", str(1 << 20)]


@pytest.mark.parametrize("name, value", [("PYTHAGORAS_SILENT_AFTER", "soon"),
                                         ("PYTHAGORAS_SILENT_AFTER", "-1"),
                                         ("PYTHAGORAS_POOL_MAX_CHUNK", "0")])
def test_a_malformed_interval_or_limit_is_named_at_import(name, value):
    from helpers import run_python

    out = run_python("import pythagoras_p2p", env={name: value}, check=False)
    assert out.returncode != 0 and f"{name}={value!r}" in out.stderr and "unset it" in out.stderr
