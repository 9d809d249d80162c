#!/usr/bin/env python3
"""A deploy, measured: constant load through psproxy while its only upstream
is killed and started again DOWN seconds later (lb_try_duration 10s).
Prints the count of requests and of non-2xx answers; the goal is zero.

    bench/deploy_restart.py [--psproxy build/psproxy] [--down 3] [--clients 4]
"""
import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("port %d never opened" % port)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--psproxy", default=os.path.join(ROOT, "build", "psproxy"))
    ap.add_argument("--down", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    up_port, px_port = free_port(), free_port()
    tmp = tempfile.mkdtemp()
    conf = os.path.join(tmp, "deploy.conf")
    with open(conf, "w") as f:
        f.write("{\n\tadmin off\n\tworkers 1\n}\nhttp://127.0.0.1:%d {\n"
                "\treverse_proxy 127.0.0.1:%d {\n\t\tlb_try_duration 10s\n"
                "\t\tlb_try_interval 100ms\n\t}\n}\n" % (px_port, up_port))
    upstream = [os.path.join(ROOT, "tests", "integration", "upstream.py"), "--port", str(up_port)]
    up = subprocess.Popen([sys.executable] + upstream, stdout=subprocess.DEVNULL)
    px = subprocess.Popen([a.psproxy, "-c", conf], stderr=open(os.path.join(tmp, "log"), "w"))
    wait_port(up_port)
    wait_port(px_port)
    stop = time.monotonic() + a.seconds
    counts = {"total": 0, "bad": 0, "errors": 0}
    lock = threading.Lock()

    def client():
        c = http.client.HTTPConnection("127.0.0.1", px_port, timeout=15)
        while time.monotonic() < stop:
            try:
                c.request("GET", "/bytes/100")
                r = c.getresponse()
                r.read()
                ok = 200 <= r.status < 300
                with lock:
                    counts["total"] += 1
                    counts["bad"] += not ok
            except Exception:
                with lock:
                    counts["total"] += 1
                    counts["errors"] += 1
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", px_port, timeout=15)

    threads = [threading.Thread(target=client) for _ in range(a.clients)]
    for t in threads:
        t.start()
    time.sleep(2)
    up.send_signal(signal.SIGKILL)
    up.wait()
    killed = time.monotonic()
    time.sleep(a.down)
    up = subprocess.Popen([sys.executable] + upstream, stdout=subprocess.DEVNULL)
    back = time.monotonic() - killed
    for t in threads:
        t.join()
    px.send_signal(signal.SIGTERM)
    px.wait(10)
    up.send_signal(signal.SIGTERM)
    up.wait(10)
    print("upstream down %.1f s; %d requests, %d non-2xx, %d connection errors "
          "(%d clients, lb_try_duration 10s)" % (back, counts["total"], counts["bad"],
                                                  counts["errors"], a.clients))
    return 1 if counts["bad"] or counts["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
