"""Resources on the embedded default: calls hold what they ask for, and what this machine lacks
fails at once.

Overlaps are told from the start and end times each call writes; the machine's GPUs and custom
resources are declared through ``PYTHAGORAS_RESOURCES`` (these machines have no GPU).
"""

from __future__ import annotations

import json
import time

import psutil
import pytest

from pythagoras_p2p import LocalCloud, ResourcesError, kw_args


def spans(path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def overlapping(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def timed():
    def work(*, path, i, pause):
        import json
        import os
        import time

        start = time.time()
        time.sleep(pause)
        with open(path, "a") as fh:
            fh.write(json.dumps({"i": i, "start": start, "end": time.time(), "pid": os.getpid(),
                                 "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\n")
        return i

    return work


@pytest.fixture
def cloud_with(tmp_path, monkeypatch):
    made = []

    def make(resources: str = "", workers: int = 3) -> LocalCloud:
        monkeypatch.setenv("PYTHAGORAS_RESOURCES", resources)
        cloud = LocalCloud(home=tmp_path / f"home{len(made)}", workers=workers)
        made.append(cloud)
        return cloud

    yield make
    for cloud in made:
        cloud.close()


def test_a_gpu_call_on_a_machine_without_one_fails_at_once(cloud_with):
    cloud = cloud_with()
    gpu = cloud.add_pure_function(resources={"gpus": 1})(lambda_free_square)
    t0 = time.monotonic()
    with pytest.raises(ResourcesError, match=r"gpus: 1 asked, 0 there.*node"):
        gpu.sync_remote(x=3)
    with pytest.raises(ResourcesError, match="gpus: 1 asked, 0 there") as plain:
        gpu(x=3)  # a plain call runs here: the same rule
    # sync_remote / sync_parallel run on this machine too here: they are not the way out
    assert "sync_remote" not in str(plain.value) and "sync_parallel" not in str(plain.value)
    assert "pythagoras-node start" in str(plain.value)
    assert time.monotonic() - t0 < 10
    assert gpu.lookup(x=3) is None
    out = gpu.sync_parallel([kw_args(x=1)], return_exceptions=True)
    assert isinstance(out[0], ResourcesError)


def lambda_free_square(*, x):
    return x * x


def test_memory_reservations_keep_two_big_calls_apart_while_others_run(cloud_with, tmp_path):
    cloud = cloud_with()
    path = str(tmp_path / "spans")
    big = int(psutil.virtual_memory().total * 0.6)
    heavy = cloud.add_pure_function(resources={"memory": big})(timed())
    light = cloud.add_pure_function(timed())
    heavy_futures = heavy.async_parallel(kw_args(path=path, i=i, pause=0.6) for i in range(2))
    assert light.sync_parallel(kw_args(path=path, i=10 + i, pause=0.2) for i in range(4)) == [10, 11, 12, 13]
    assert [f.result(60) for f in heavy_futures] == [0, 1]
    done = {s["i"]: s for s in spans(path)}
    assert not overlapping(done[0], done[1])  # 2 × 60 % of the RAM never at once
    # the light calls ran while a heavy one held its memory
    assert any(overlapping(done[0], done[j]) or overlapping(done[1], done[j]) for j in range(10, 14))


def test_a_custom_resource_is_held_while_its_call_runs(cloud_with, tmp_path):
    cloud = cloud_with("license=1")
    path = str(tmp_path / "spans")
    licensed = cloud.add_pure_function(resources={"license": 1})(timed())
    assert licensed.sync_parallel(kw_args(path=path, i=i, pause=0.3) for i in range(3)) == [0, 1, 2]
    done = spans(path)
    assert not any(overlapping(a, b) for a in done for b in done if a is not b)
    with pytest.raises(ResourcesError, match="license: 2 asked, 1 there"):
        cloud.add_pure_function(resources={"license": 2})(timed()).sync_remote(
            path=path, i=9, pause=0)


def test_a_gpu_call_sees_only_its_gpus_and_others_see_none(cloud_with, tmp_path):
    cloud = cloud_with("gpus=2")
    path = str(tmp_path / "spans")
    gpu = cloud.add_pure_function(resources={"gpus": 1})(timed())
    plain = cloud.add_pure_function(timed())
    futures = gpu.async_parallel(kw_args(path=path, i=i, pause=0.5) for i in range(3))
    assert plain.sync_remote(path=path, i=10, pause=0) == 10
    assert [f.result(60) for f in futures] == [0, 1, 2]
    done = {s["i"]: s for s in spans(path)}
    assert done[10]["cuda"] == ""  # a call that asked for no GPU sees none
    assert {done[i]["cuda"] for i in range(3)} <= {"0", "1"}
    for a in range(3):
        for b in range(a + 1, 3):
            if overlapping(done[a], done[b]):
                assert done[a]["cuda"] != done[b]["cuda"]  # never one GPU for two calls
