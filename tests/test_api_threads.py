"""Several Python threads calling every method of one profiler at once must all finish, and
the interpreter must keep running meanwhile.

The defect this guards against: the binding held a mutex while it released the GIL for the
seconds a snapshot takes, and `stats()` waited for that mutex while holding the GIL; one
thread looping `snapshot()` and another looping `stats()` froze the whole interpreter within
a second (even `print` in a third thread never ran). The script runs in a child process so
that a freeze fails the test (timeout) instead of hanging the suite; a heartbeat thread
measures the longest time the interpreter stood still.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.bpf

SCRIPT = textwrap.dedent(
    r'''
    import json, sys, threading, time
    import ddprofiler
    from ddprofiler import _native

    LEVEL = sys.argv[1]  # "public": ddprofiler.Profiler; "native": _native.Profiler
    RUN_S = 3.0
    counts = {}
    errors = []
    beats = []

    def loop(name, fn, until):
        n = 0
        while time.monotonic() < until:
            try:
                fn()
            except ddprofiler.ProfilerError:  # after close: a clean error, never a hang
                counts[name + "_refused"] = counts.get(name + "_refused", 0) + 1
            except Exception as e:
                errors.append(f"{name}: {type(e).__name__}: {e}")
                return
            else:
                n += 1
        counts[name] = n

    def heartbeat(until):
        while time.monotonic() < until:
            beats.append(time.monotonic())
            time.sleep(0.01)

    if LEVEL == "public":
        p = ddprofiler.Profiler(frequency=499)
        p.start()
        snapshot = lambda reset: p.snapshot(reset)
    else:
        p = _native.Profiler(frequency=499)
        p.start()
        snapshot = lambda reset: p.snapshot(reset)

    end = time.monotonic() + RUN_S
    late = end + RUN_S  # a second phase, after stop() and close()
    threads = [
        threading.Thread(target=heartbeat, args=(late,)),
        threading.Thread(target=loop, args=("snapshot_reset", lambda: snapshot(True), late)),
        threading.Thread(target=loop, args=("snapshot_keep", lambda: snapshot(False), late)),
        threading.Thread(target=loop, args=("stats_a", p.stats, late)),
        threading.Thread(target=loop, args=("stats_b", p.stats, late)),
        threading.Thread(target=loop, args=("start_again", p.start, late)),
    ]
    for t in threads:
        t.start()
    time.sleep(RUN_S)
    stoppers = [threading.Thread(target=p.stop) for _ in range(3)]
    for t in stoppers:
        t.start()
    time.sleep(0.5)
    closers = [threading.Thread(target=p.close) for _ in range(3)]
    for t in closers:
        t.start()
    for t in threads + stoppers + closers:
        t.join()
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    print(json.dumps({"counts": counts, "errors": errors, "beats": len(beats),
                      "max_gap_s": max(gaps) if gaps else None}))
    '''
)


@pytest.mark.parametrize("level", ["public", "native"])
def test_every_method_from_many_threads_at_once(level):
    try:
        res = subprocess.run([sys.executable, "-c", SCRIPT, level], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the threads did not finish in 120 s (a deadlock); stderr:\n{e.stderr}")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["errors"] == [], out
    counts = out["counts"]
    # Every method ran, over and over, while the others did.
    for name in ("snapshot_reset", "snapshot_keep", "stats_a", "stats_b"):
        assert counts.get(name, 0) + counts.get(name + "_refused", 0) >= 3, counts
    assert counts["stats_a"] > 100 and counts["stats_b"] > 100, counts
    # start() again is refused, every time, without hanging.
    assert counts.get("start_again", 0) == 0 and counts["start_again_refused"] >= 3, counts
    # After close(), snapshots are refused cleanly.
    assert counts.get("snapshot_reset_refused", 0) > 0, counts
    # The interpreter never stood still: the heartbeat thread kept beating (a freeze of the
    # old kind lasts until the timeout).
    assert out["beats"] > 100 and out["max_gap_s"] < 5, out
