"""Benchmark of live control: the reply delay of `mbus-slave --device pty --control` while
API clients hammer the control port (GET /api/meters, PUT a value, PATCH the status, in
turn), against the same line with the API idle. For mbus-bench; standalone:

    python -m mbus_tools.bench_control [--n 300] [--clients 50] [--baud 2400]

prints one JSON object. Nothing here asserts a timing: the figures say whether the line
kept the EN 13757-2 reply window under load ("in_window" of "n")."""
import argparse
import http.client
import json
import os
import random
import select
import sys
import threading
import time


def _short(c, a):
    return bytes((0x10, c, a, (c + a) & 0xFF, 0x16))


def _percentile(values, q):
    i = min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))
    return values[i]


def _hammer(url, stop, counts, seed):
    """One API client: requests back to back until `stop` is set."""
    host, port = url[len("http://"):].rsplit(":", 1)
    rng = random.Random(seed)
    calls = (("GET", "/api/meters", None),
             ("PUT", "/api/meters/3/records/0", lambda: {"value": rng.randint(1000, 2000)}),
             ("PATCH", "/api/meters/3", lambda: {"status": rng.choice((0, 16))}))
    i = seed
    while not stop.is_set():
        method, path, body = calls[i % len(calls)]
        i += 1
        data = json.dumps(body()).encode() if body else None
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=10)
            c.request(method, path, body=data)
            r = c.getresponse()
            r.read()
            c.close()
            key = "ok" if r.status < 400 else "refused"
        except OSError:
            key = "failed"
        with counts["lock"]:
            counts[key] += 1


def _latencies(ser, n, rng, warm=10):
    """n REQ_UD2 round trips: ms from the request written to the first reply byte."""
    fd = ser.fileno()
    reqs = (_short(0x5B, 3), _short(0x7B, 3))
    lat = []
    for i in range(warm + n):
        time.sleep(rng.random() * 0.005)
        t0 = time.perf_counter_ns()
        os.write(fd, reqs[i & 1])
        if not select.select((fd,), (), (), 3)[0]:
            lat.append(None)   # a missed reply
            continue
        t1 = time.perf_counter_ns()
        data = b""
        while not (data[:1] == b"\xe5" or (len(data) >= 2 and len(data) >= data[1] + 6)):
            if not select.select((fd,), (), (), 3)[0]:
                break
            data += os.read(fd, 600)
        if i >= warm:
            lat.append((t1 - t0) / 1e6)
    return lat


def _summary(lat, lo, hi):
    got = sorted(v for v in lat if v is not None)
    out = {"n": len(lat), "missed": len(lat) - len(got),
           "in_window": sum(1 for v in got if lo <= v <= hi)}
    if got:
        out.update({"p1_ms": _percentile(got, 0.01), "p50_ms": _percentile(got, 0.5),
                    "p99_ms": _percentile(got, 0.99), "max_ms": got[-1]})
    return out


def control_load(n=300, clients=50, baud=2400, seed=1):
    """Reply delays on a pty at `baud` with the control API idle, then with `clients`
    API clients hammering it: {"idle": {...}, "loaded": {...}, "api": {...}}."""
    from mbus_ports.line import reply_window_ms, default_reply_delay_ms
    from mbus_ports.testing import SlaveProcess
    rng = random.Random(seed)
    lo, hi = reply_window_ms(baud)
    with SlaveProcess("--baud", str(baud), "--log-level", "warning") as s:
        with s.serial(baud=baud, timeout=0) as ser:
            idle = _latencies(ser, n, rng)
            stop = threading.Event()
            counts = {"ok": 0, "refused": 0, "failed": 0, "lock": threading.Lock()}
            threads = [threading.Thread(target=_hammer, args=(s.url, stop, counts, seed + k),
                                        daemon=True) for k in range(clients)]
            for t in threads:
                t.start()
            t0 = time.monotonic()
            try:
                time.sleep(0.5)   # the clients under way
                loaded = _latencies(ser, n, rng)
            finally:
                stop.set()
                for t in threads:
                    t.join(timeout=15)
            secs = time.monotonic() - t0
        alive = s.proc.poll() is None
    del counts["lock"]
    return {"baud": baud, "clients": clients, "delay_ms": default_reply_delay_ms(baud),
            "window_ms": [lo, hi], "idle": _summary(idle, lo, hi),
            "loaded": _summary(loaded, lo, hi),
            "api": dict(counts, per_s=round(counts["ok"] / secs, 1), seconds=round(secs, 2)),
            "slave_alive": alive}


def main(argv=None):
    p = argparse.ArgumentParser(prog="bench_control", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=300, help="REQ_UD2 round trips per phase")
    p.add_argument("--clients", type=int, default=50, help="API clients hammering")
    p.add_argument("--baud", type=int, default=2400)
    a = p.parse_args(argv)
    if a.n < 1 or a.clients < 0:
        p.error("--n must be >= 1 and --clients >= 0")
    json.dump(control_load(a.n, a.clients, a.baud), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
