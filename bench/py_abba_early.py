"""Benchmark workload for `cargo xtask bench deep` (pyabba): an ABBA deadlock
with threading.Lock that closes within milliseconds of the program's start,
before an observer that places its uprobes after the start could see the
locks being taken. "alpha" takes lock_a then lock_b, "beta" lock_b then
lock_a; main joins. Prints "thread NAME TID" for both workers; hangs forever.
"""
import sys
import threading

lock_a = threading.Lock()
lock_b = threading.Lock()
both_hold_first = threading.Barrier(2)


def worker(first, second):
    sys.stdout.write(f"thread {threading.current_thread().name} {threading.get_native_id()}\n")
    sys.stdout.flush()
    first.acquire()
    both_hold_first.wait()
    second.acquire()  # never returns


alpha = threading.Thread(target=worker, name="alpha", args=(lock_a, lock_b))
beta = threading.Thread(target=worker, name="beta", args=(lock_b, lock_a))
alpha.start()
beta.start()
alpha.join()
