"""py_idle_service.py: an idle Python service, as a test host keeps many of: the main thread waits
for a connection on a listening socket (accept), four worker threads block on an empty
queue.Queue for the jobs it would hand them. It costs the host nothing; what a daemon watching a
thousand of them costs is its own per-process price. Nothing hangs (a connection would wake it):
no report may be written. Runs until killed.
"""
import queue
import socket
import threading

jobs = queue.Queue()


def worker():
    while True:
        jobs.get()()


for i in range(4):
    threading.Thread(target=worker, name=f"idle-{i}", daemon=True).start()
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    jobs.put(conn.close)
