"""The ``pythagoras-node status`` table: what a person sees in an 80-column terminal."""

from __future__ import annotations

from pythagoras_p2p.cli.dashboard import _count, render
from rich.console import Console


def _entry(node_id: str, address: str, **extra) -> dict:
    entry = {"id": node_id, "address": address, "workers_busy": 3, "workers_total": 16,
             "load": 2.5, "tasks_done": 1_234_567, "cache_entries": 23_456,
             "cache_bytes": 12 * 2**30, "hit_rate": 0.93, "last_seen_s": 0.4,
             "swarm": "lab", "tag": "67848413d5bb9abc"}
    entry.update(extra)
    return entry


def _shown(status: dict, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(render(status, width))
    return console.export_text().splitlines()


def test_the_swarm_fits_80_columns_with_every_figure_whole():
    me = _entry("c15d0853d70c", "192.168.1.23:7575", self=True)
    peer = _entry("a0b1c2d3e4f5", "10.0.0.7:7575", hit_rate=None, tasks_done=987)
    lines = _shown({"node": me, "peers": [peer, me]})
    assert all(len(line) <= 80 for line in lines)
    rows = [line for line in lines if "7575" in line]
    assert rows[0].split()[:2] == ["c15d0853d70c*", "192.168.1.23:7575"]  # this node first
    assert rows[0].split()[2:] == ["3/16", "2.50", "1.2M", "23.5k", "12.0", "GiB", "93%", "0.4s",
                                   "-"]
    assert rows[1].split()[:2] == ["a0b1c2d3e4f5", "10.0.0.7:7575"]
    assert rows[1].split()[4] == "987" and rows[1].split()[-3] == "-"


def test_host_and_owner_are_columns_when_wide_and_lines_when_narrow():
    me = _entry("c15d0853d70c", "192.168.1.23:7575", self=True, hostname="ws-7",
                owner_name="ann")
    peer = _entry("a0b1c2d3e4f5", "10.0.0.7:7575", hostname="lap", owner_name="bo")
    wide = [line for line in _shown({"node": me, "peers": [peer, me]}, width=120)]
    assert wide[1].split()[:4] == ["node", "host", "owner", "address"]
    assert next(line for line in wide if "10.0.0.7" in line).split()[:3] == ["a0b1c2d3e4f5", "lap", "bo"]
    narrow = _shown({"node": me, "peers": [peer, me]}, width=80)
    assert all(len(line) <= 80 for line in narrow)
    text = " ".join(line.strip() for line in narrow)
    assert "c15d0853d70c: ws-7, owner ann" in text and "a0b1c2d3e4f5: lap, owner bo" in text


def test_held_shows_gpus_custom_resources_and_memory_in_use():
    gpu = _entry("c15d0853d70c", "10.0.0.1:7575", self=True,
                 resources={"cpus": 16, "gpus": 1, "memory": 64 * 2**30, "license": 2},
                 resources_in_use={"cpus": 3, "gpus": 1, "memory": 8 * 2**30})
    laptop = _entry("a0b1c2d3e4f5", "10.0.0.7:7575",
                    resources={"cpus": 4, "gpus": 0, "memory": 16 * 2**30}, resources_in_use={})
    text = "\n".join(_shown({"node": gpu, "peers": [gpu, laptop]}, width=140))
    assert "gpus 1/1 license 0/2 memory 8G/64G" in text
    laptop_row = next(line for line in text.splitlines() if "10.0.0.7" in line)
    assert laptop_row.split()[-1] == "-"  # no GPU, nothing custom, no memory held


def test_an_ipv6_address_is_shown_as_text_not_read_as_markup():
    me = _entry("c15d0853d70c", "[fe80::1ff:fe23:4567]:7575", self=True)
    text = "".join(line.strip() for line in _shown({"node": me, "peers": [me]}, width=120))
    assert "[fe80::1ff:fe23:4567]:7575" in text


def test_counts_stay_short():
    assert [_count(n) for n in (0, 9_999, 10_000, 12_345, 999_999, 4_560_000, 2_500_000_000)] == [
        "0", "9999", "10.0k", "12.3k", "1000k", "4.6M", "2.5G"]


def test_the_hit_column_is_named_for_what_it_counts():
    """A node counts the calls sent to it; a caller's hits in its own store never reach it, so
    a column called "hits" read 0% after a fully cached rerun."""
    me = _entry("c15d0853d70c", "192.168.1.23:7575", self=True)
    lines = _shown({"node": me, "peers": [me]})
    heading = next(line for line in lines if line.startswith("node "))
    assert "served" in heading.split() and "hits" not in heading.split()
    caption = " ".join(lines)
    assert "calls sent to this node" in caption and "own store never reach" in " ".join(
        caption.split())


def test_results_answered_with_one_copy_are_counted_under_the_table():
    me = _entry("c15d0853d70c", "10.0.0.1:7575", self=True,
                replication={"late_acks": 12, "under_replicated": 3})
    peer = _entry("a0b1c2d3e4f5", "10.0.0.7:7575", replication={"late_acks": 0})
    text = " ".join(" ".join(_shown({"node": me, "peers": [me, peer]}, width=200)).split())
    assert ("c15d0853d70c: 3 copies of results not yet on their homes (repairing); 12 result(s) "
            "answered with one copy since it started") in text
    assert "a0b1c2d3e4f5:" not in text
