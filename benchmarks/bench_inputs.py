"""What verifying traces costs: the memo hit of a call that reads nothing, and a call that reads 10 files.

1. memo hit of ``small(x=1, y="abc")`` (reads nothing), beside ``joblib.Memory``'s hit in the
   same process: (a) in a process that only hits (the result was stored by another process, so
   nothing was ever recorded here and the audit hook is not installed), (b) in a process that
   computed the result itself (the hook is installed: every audit event of the process, such as
   ``id()``, goes through it). With ``--before PATH`` the same is measured with the code of
   another checkout (e.g. the commit before traces) in the same run, and the ratios printed;
2. a call that reads 10 small files and one environment variable: the miss with and without
   recording (``track_inputs=False``), and the hit with its check (10 ``stat``) against the hit
   of the untracked function (no check).

All figures are medians over blocks of calls. Only local files are used.

    python benchmarks/bench_inputs.py [--quick] [--before /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

HIT = textwrap.dedent('''
    import json, os, sys, tempfile, time
    from statistics import median
    import joblib
    from pythagoras_p2p import LocalCloud

    calls, blocks, computed_here = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    home, location = sys.argv[4], sys.argv[5]

    def small(*, x, y):
        return x + len(y)

    def small_anchor(x, y):
        return x + len(y)

    def per_call_us(call):
        samples = []
        for _ in range(blocks):
            t0 = time.perf_counter()
            for _ in range(calls):
                call()
            samples.append((time.perf_counter() - t0) / calls * 1e6)
        return median(samples)

    cloud = LocalCloud(home=home, workers=1)
    ours = cloud.add_pure_function(small)
    theirs = joblib.Memory(location=location, verbose=0).cache(small_anchor)
    if computed_here:
        ours.forget(x=1, y="abc")
    ours(x=1, y="abc"), theirs(x=1, y="abc")
    hook = sys.modules.get("pythagoras_p2p.identity.hooks")
    installed = bool(hook and hook.installed)
    print(json.dumps({"ours": per_call_us(lambda: ours(x=1, y="abc")),
                      "joblib": per_call_us(lambda: theirs(x=1, y="abc")),
                      "hook": installed, "code": os.path.dirname(sys.modules["pythagoras_p2p"].__file__)}))
''')


def measure_hit(code_root: str | None, calls: int, blocks: int, computed_here: bool) -> dict:
    """The hit figures of one fresh process (with the package of ``code_root`` if given)."""
    env = dict(os.environ)
    env.pop("PYTHAGORAS_HOME", None)
    if code_root:
        env["PYTHONPATH"] = code_root
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        home, location = os.path.join(tmp, "home"), os.path.join(tmp, "joblib")
        args = [sys.executable, "-c", HIT, str(calls), str(blocks)]
        cwd = code_root or tmp
        # The result is stored by a process of its own first, so that a measuring process
        # that is not to compute never records anything.
        subprocess.run([*args, "0", home, location], env=env, cwd=cwd, check=True,
                       capture_output=True, text=True, timeout=120)
        done = subprocess.run([*args, "1" if computed_here else "0", home, location], env=env,
                              cwd=cwd, check=True, capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_files(calls: int, blocks: int) -> dict:
    """Misses and hits of a call that reads 10 small files, tracked and untracked."""
    import time

    from bench_foundation import per_call_us as median_per_call_us  # benchmarks/ is on sys.path

    from pythagoras_p2p import LocalCloud
    from pythagoras_p2p.identity import inputs, traces

    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        paths = []
        for i in range(10):
            path = os.path.join(tmp, f"in{i}.txt")
            with open(path, "w") as f:
                f.write(f"{i}\n" * 100)
            paths.append(path)
        # A file changed within RACY_NS of being seen is hashed at every check (its stat could
        # hide a rewrite within the same clock tick): wait until they are as old as data is.
        time.sleep(inputs.RACY_NS / 1e9 + 0.1)
        os.environ["BENCH_INPUTS_MODE"] = "x"
        cloud = LocalCloud(home=os.path.join(tmp, "home"), workers=1)

        def ten_files(*, k, paths):
            total = 0
            for path in paths:
                with open(path) as f:
                    total += len(f.read())
            return total + k + len(os.environ.get("BENCH_INPUTS_MODE", ""))

        tracked = cloud.add_pure_function(ten_files)
        untracked = cloud.add_pure_function(ten_files, track_inputs=False)

        def per_call_us(call, start=0):
            return median_per_call_us(call, calls, blocks, start)

        tracked(k=-1, paths=paths), untracked(k=-1, paths=paths)  # first-call costs paid
        miss_tracked = per_call_us(lambda k: tracked(k=k, paths=paths))
        miss_untracked = per_call_us(lambda k: untracked(k=k, paths=paths))
        hit_tracked = per_call_us(lambda _: tracked(k=0, paths=paths))
        hit_untracked = per_call_us(lambda _: untracked(k=0, paths=paths))
        trace = tracked.lookup(k=0, paths=paths).inputs
        assert trace["files"].keys() == set(paths) and trace["files"][paths[0]][2]  # not racy
        cloud.close()

        def read_all(_):
            for path in paths:
                with open(path) as f:
                    f.read()
            os.environ.get("BENCH_INPUTS_MODE")

        def recorded(_):
            traces._digests.clear()  # as a worker sees them the first time: each one hashed
            rec = inputs.start()
            read_all(_)
            inputs.stop(rec)

        def recorded_again(_):  # as a worker sees them at its next call: each one a stat
            rec = inputs.start()
            read_all(_)
            inputs.stop(rec)

        raw = inputs.encode_trace(trace)
        reads = per_call_us(read_all)
        record = per_call_us(recorded) - per_call_us(lambda _: traces._digests.clear())
        record_again = per_call_us(recorded_again)
        check = per_call_us(lambda _: inputs.holds_raw(raw))
        stats = per_call_us(lambda _: [os.stat(p) for p in paths])
    return {"miss_tracked": miss_tracked, "miss_untracked": miss_untracked,
            "hit_tracked": hit_tracked, "hit_untracked": hit_untracked,
            "reads": reads, "record": record, "record_again": record_again, "check": check,
            "stats": stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--before", help="a checkout of the code to compare with (its root)")
    opts = parser.parse_args()
    calls, blocks = (500, 3) if opts.quick else (2000, 7)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    print("1. memo hit of a call that reads nothing (µs per call, median)")
    rows = [("after, a process that only hits", here, False),
            ("after, a process that computed (hook installed)", here, True)]
    if opts.before:
        rows = [("before, a process that only hits", opts.before, False),
                ("before, a process that computed", opts.before, True), *rows]
    for label, root, computed in rows:
        hit = measure_hit(root, calls, blocks, computed)
        print(f"   {label:<50} ours {hit['ours']:5.2f}   joblib.Memory {hit['joblib']:6.1f}   "
              f"ratio {hit['joblib'] / hit['ours']:5.1f}x joblib"
              + ("   (audit hook installed)" if hit.get("hook") else ""))
        assert hit["code"].startswith(root), f"measured {hit['code']}, not {root}"

    files = bench_files(max(calls // 10, 20), blocks)
    print("2. a call that reads 10 small files and one variable (µs per call, median)")
    print(f"   miss, recorded     {files['miss_tracked']:7.1f}   untracked {files['miss_untracked']:7.1f}"
          f"   recording costs {files['miss_tracked'] - files['miss_untracked']:6.1f}")
    print(f"   hit, checked       {files['hit_tracked']:7.2f}   untracked {files['hit_untracked']:7.2f}"
          f"   the check costs {files['hit_tracked'] - files['hit_untracked']:6.2f}")
    print(f"   in isolation: reading the 10 files {files['reads']:.1f}; the same recorded, each "
          f"hashed {files['record']:.1f}, hashed before by this process {files['record_again']:.1f}"
          f"; the check {files['check']:.1f}, of which 10 os.stat {files['stats']:.1f}")


if __name__ == "__main__":
    main()
