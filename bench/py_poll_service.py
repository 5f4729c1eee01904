"""py_poll_service.py: a healthy service-like Python process, as a test host runs many: four worker
threads poll a queue.Queue with a 50 ms timeout, the main thread sleeps 10 ms at a time. Nothing ever
arrives and nothing hangs: a daemon watching it must write no report. Runs until killed.
"""
import queue
import threading
import time

jobs = queue.Queue()


def worker():
    while True:
        try:
            jobs.get(timeout=0.05)()
        except queue.Empty:
            pass


for i in range(4):
    threading.Thread(target=worker, name=f"poller-{i}", daemon=True).start()
print("ready", flush=True)
while True:
    time.sleep(0.01)
