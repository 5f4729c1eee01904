"""py_idle_service.py: an idle Python service, as a test host keeps many of: four worker threads
block on an empty queue.Queue forever (futex waits nobody will end), the main thread waits on an
Event. It costs the host nothing; what a daemon watching a thousand of them costs is its own
per-process price. Nothing hangs: no report may be written. Runs until killed.
"""
import queue
import threading

jobs = queue.Queue()


def worker():
    while True:
        jobs.get()()


for i in range(4):
    threading.Thread(target=worker, name=f"idle-{i}", daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
