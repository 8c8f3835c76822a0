# Python workloads with known chains, one per thread (each thread runs one mode, in a loop,
# until the deadline). Runs on CPython 3.8+. Usage: pychains.py SECONDS [MODES [IDS_FILE]].
# Writes one line per thread to IDS_FILE, "<mode> <native thread id>" (so that a test can
# tell the threads' samples apart), then prints "ready".
# Line numbers matter to the tests: they find them by the LINE markers in this file.
import asyncio
import sys
import threading
import time

RUN = True


def burn(n):
    total = 0
    for i in range(n):
        total += i * i  # LINE burn_a
        total ^= i >> 3  # LINE burn_b
        total %= 1000003  # LINE burn_c
    return total


def plain_leaf():
    return burn(3000)


def plain_mid():
    return plain_leaf()


def plain_top():
    while RUN:
        plain_mid()


class Base:
    def run(self):
        return self.step()


class Child(Base):
    def step(self):
        return burn(3000)


def methods_top():
    child = Child()
    while RUN:
        child.run()


def make_closure():
    def inner():
        return burn(3000)
    return inner


def closure_top():
    f = make_closure()
    while RUN:
        f()


def gen_values():
    while True:
        yield burn(3000)


def generator_top():
    for _ in gen_values():
        if not RUN:
            break


def key_fn(x):
    return burn(300)


def sorted_top():
    while RUN:
        sorted(range(20), key=key_fn)


async def coro_leaf():
    # Long enough that the event loop's own work between steps stays under 1% of samples.
    return burn(30000)


async def coro_mid():
    while RUN:
        await coro_leaf()
        await asyncio.sleep(0)


def asyncio_top():
    asyncio.run(coro_mid())


def recurse(n):
    if n == 0:
        return burn(3000)
    return recurse(n - 1)


def recursion_top():
    while RUN:
        recurse(100)


MODES = {
    "plain": plain_top,
    "methods": methods_top,
    "closure": closure_top,
    "generator": generator_top,
    "sorted": sorted_top,
    "asyncio": asyncio_top,
    "recursion": recursion_top,
}


def main():
    global RUN
    seconds = float(sys.argv[1])
    modes = sys.argv[2].split(",") if len(sys.argv) > 2 else list(MODES)
    ids = {}
    started = threading.Barrier(len(modes) + 1)

    def thread_main(mode):
        ids[mode] = threading.get_native_id()
        started.wait()
        MODES[mode]()

    threads = [threading.Thread(target=thread_main, args=(m,)) for m in modes]
    for t in threads:
        t.start()
    started.wait()
    if len(sys.argv) > 3:
        with open(sys.argv[3], "w") as f:
            f.writelines(f"{mode} {ids[mode]}\n" for mode in modes)
    print("ready", flush=True)
    time.sleep(seconds)
    RUN = False
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
