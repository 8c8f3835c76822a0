# Case python-perf-trampoline of issue 10, standing for python/cpython PR #112254 (gh-118518, perf cannot unwind the trampolines) and PR #136500.
# A small pure-Python workload with a known call chain:
# main -> handle_batch -> score_item -> inner_math
import sys, time
def inner_math(n):
    s = 0
    for i in range(n):
        s += (i * i) % 7
    return s
def score_item(i):
    return inner_math(2000 + i % 10)
def handle_batch(k):
    return sum(score_item(i) for i in range(k))
def main(secs):
    t0 = time.time()
    while time.time() - t0 < secs:
        handle_batch(50)
if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 6)
