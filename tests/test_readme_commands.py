"""The README's master commands, run as printed (issue 16: the README must work).

libmbus is not installable here, so its serial tools are replayed with their exact termios
calls (rscada/libmbus mbus/mbus-serial.c): mbus_serial_connect opens the device O_RDWR |
O_NOCTTY, fills a zeroed termios with CS8|CREAD|CLOCAL|PARENB, VMIN 0, VTIME 30, 2400 baud
and calls tcsetattr (its result ignored); then the tool calls mbus_serial_set_baudrate with
its -b rate (9600 without -b: `baudrate = 9600` in bin/mbus-serial-*.c), a second
tcsetattr whose failure prints "Failed to set baud rate." and ends the tool. Python's
termios.tcsetattr makes the same libc call with the same structure (c_line 0, speeds set
with cfsetispeed/cfsetospeed). Then each tool's request and the reply it needs.

The pyMeterBus snippets of the README are run for real, with the device substituted.
"""
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import termios
import time

import pytest
import serial

from tests.hostutil import long_frame, short

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the README's pty commands are for Linux")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
PTY_PLACEHOLDER = re.compile(r"/dev/pts/(?:N|\d+)")
LIBMBUS_DEFAULT_BAUD = 9600   # bin/mbus-serial-*.c: baudrate = 9600 unless -b
LIBMBUS_VTIME = {300: 13, 600: 8, 1200: 5, 2400: 30, 4800: 3, 9600: 30, 19200: 2,
                 38400: 2}     # mbus_serial_set_baudrate's table


def readme():
    with open(README) as f:
        return f.read()


def shell_blocks(text):
    return re.findall(r"```(?:sh|console)\n(.*?)```", text, re.S)


def command_lines(prefix):
    """README lines in sh blocks that start with `prefix`, without their # comments."""
    out = []
    for block in shell_blocks(readme()):
        for line in block.splitlines():
            if line.startswith(prefix):
                out.append(line.split("  #")[0].split(" # ")[0].strip())
    return out


# -- libmbus's serial tools ------------------------------------------------------------
def libmbus_connect(path):
    """mbus_serial_connect: open, a fresh termios at 2400 8E1, tcsetattr (unchecked)."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    cc = [0] * 32
    cc[termios.VMIN] = 0
    cc[termios.VTIME] = 30
    attrs = [0, 0, termios.CS8 | termios.CREAD | termios.CLOCAL | termios.PARENB, 0,
             termios.B2400, termios.B2400, cc]
    try:
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except termios.error:
        pass   # libmbus ignores this call's result
    return fd, attrs


def libmbus_set_baudrate(fd, attrs, baud):
    """mbus_serial_set_baudrate: the same termios with the new speed and VTIME."""
    attrs[6][termios.VTIME] = LIBMBUS_VTIME[baud]
    speed = getattr(termios, "B%d" % baud)
    attrs[4] = attrs[5] = speed
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def libmbus_recv(fd, deadline=3.0):
    """mbus_serial_recv_frame: blocking reads (VMIN 0, VTIME) until a frame is complete."""
    data = b""
    end = time.monotonic() + deadline
    while True:
        left = end - time.monotonic()
        if left <= 0 or not select.select((fd,), (), (), left)[0]:
            break
        data += os.read(fd, 1 if len(data) < 2 else 300)
        if data[:1] == b"\xe5" or (data[:1] == b"\x10" and len(data) >= 5):
            break
        if data[:1] == b"\x68" and len(data) >= 2 and len(data) >= data[1] + 6:
            break
    return data


def exchange(fd, frame):
    termios.tcflush(fd, termios.TCIFLUSH)
    os.write(fd, frame)
    return libmbus_recv(fd)


def select_frame(mask):
    """mbus_select_secondary_address's SND_UD: ID, manufacturer, version, medium (LSB
    first, F nibbles as wildcards)."""
    raw = bytes.fromhex(mask)
    data = raw[3::-1] + raw[5:3:-1] + raw[6:8]
    return long_frame(0x53, 0xFD, 0x52, data)


def check_rsp_ud(reply, ident="12345678"):
    assert reply[:1] == b"\x68" and len(reply) == reply[1] + 6, reply.hex(" ")
    assert sum(reply[4:-2]) & 0xFF == reply[-2] and reply[-1] == 0x16, reply.hex(" ")
    assert reply[7:11] == bytes.fromhex(ident)[::-1], reply.hex(" ")


def run_libmbus_tool(tool, args, fd):
    """The frames each README tool sends after connecting, and the replies it needs."""
    if tool == "mbus-serial-scan":
        assert exchange(fd, short(0x40, 3)) == b"\xe5"   # "Found a M-Bus device at 3"
    elif tool == "mbus-serial-request-data" and len(args[0]) == 16:
        assert exchange(fd, select_frame(args[0])) == b"\xe5"
        check_rsp_ud(exchange(fd, short(0x5B, 0xFD)), args[0][:8])
    elif tool == "mbus-serial-request-data":
        check_rsp_ud(exchange(fd, short(0x5B, int(args[0]))))
    elif tool == "mbus-serial-scan-secondary":
        # mbus_scan_2nd_address_range probes 0FFF.., 1FFF.., ...: 1FFF.. finds 12345678
        os.write(fd, select_frame("0FFFFFFFFFFFFFFF"))
        assert libmbus_recv(fd, 0.3) == b""
        assert exchange(fd, select_frame("1FFFFFFFFFFFFFFF")) == b"\xe5"
    elif tool == "mbus-serial-set-address":
        old, new = int(args[0]), int(args[1])
        reply = exchange(fd, long_frame(0x53, old, 0x51, bytes((0x01, 0x7A, new))))
        assert reply == b"\xe5"
        assert exchange(fd, short(0x40, new)) == b"\xe5"
    else:
        raise AssertionError("no stand-in for %s in this test" % tool)


def parse_libmbus_line(line):
    words = shlex.split(line)
    tool, rest = words[0], words[1:]
    baud = LIBMBUS_DEFAULT_BAUD
    while rest and rest[0].startswith("-"):
        if rest[0] == "-b":
            baud = int(rest[1])
            rest = rest[2:]
        else:
            rest = rest[1:]
    return tool, baud, rest[0], rest[1:]


def test_readme_libmbus_serial_commands_work_on_the_pty(slave_factory):
    lines = command_lines("mbus-serial-")
    assert len(lines) >= 4, lines
    lines += [c for c in re.findall(r"`(mbus-serial-[^`]*)`", readme())
              if PTY_PLACEHOLDER.search(c)]      # in the text: "point libmbus (`...`)"
    for line in lines:
        tool, baud, device, args = parse_libmbus_line(line)
        assert PTY_PLACEHOLDER.fullmatch(device), line
        s = slave_factory("--log-level", "warning")
        fd, attrs = libmbus_connect(s.path)
        try:
            try:
                libmbus_set_baudrate(fd, attrs, baud)
            except termios.error as e:
                pytest.fail("`%s` prints \"Failed to set baud rate.\" on this system "
                            "(its second tcsetattr: %s)" % (line, e))
            run_libmbus_tool(tool, args, fd)
        finally:
            os.close(fd)
        s.stop()


def test_readme_libmbus_tcp_command(tcp_factory):
    (line,) = command_lines("mbus-tcp-request-data")
    host, port, addr = shlex.split(line)[1:4]
    s = tcp_factory()
    with socket.create_connection((s.host, s.port), timeout=5) as sk:
        sk.sendall(short(0x5B, int(addr)))
        f = sk.makefile("rb")
        head = f.read(4)
        check_rsp_ud(head + f.read(head[1] + 2))


# -- pyMeterBus ------------------------------------------------------------------------
def python_block_after(marker):
    text = readme()
    m = re.search(r"```python\n(.*?)```", text[text.index(marker):], re.S)
    return m.group(1)


def run_python(code, tmp_path, timeout=30):
    return subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def check_pymeterbus_output(res):
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == r"b'\xe5'", res.stdout
    assert '"manufacturer": "TST"' in res.stdout and '"value": 1234' in res.stdout, \
        res.stdout


def test_readme_pymeterbus_snippet_on_the_pty(slave_factory, tmp_path):
    code = python_block_after("pyMeterBus, as a library")
    s = slave_factory("--log-level", "warning")
    assert len(PTY_PLACEHOLDER.findall(code)) == 1, code
    check_pymeterbus_output(run_python(PTY_PLACEHOLDER.sub(s.path, code), tmp_path))


def test_readme_pymeterbus_snippet_over_tcp(tcp_factory, tmp_path):
    """The snippet with its `# or:` line (socket://) instead of the pty line."""
    code = python_block_after("pyMeterBus, as a library")
    lines = code.splitlines()
    (i,) = [n for n, ln in enumerate(lines) if ln.startswith("# or: ")]
    (j,) = [n for n, ln in enumerate(lines) if PTY_PLACEHOLDER.search(ln)]
    s = tcp_factory()
    lines[j] = lines[i][len("# or: "):].replace(":20000", ":%d" % s.port)
    check_pymeterbus_output(run_python("\n".join(lines), tmp_path))


def test_readme_tcp_section_commands(tcp_factory, tmp_path):
    """`mbus-slave --device tcp:20000 --random-meters 10 --seed 3` and the python -c line
    of "M-Bus over TCP"."""
    text = readme()
    section = text[text.index("## M-Bus over TCP"):text.index("## Raspberry Pi")]
    (block,) = [b for b in shell_blocks(section) if "mbus-tcp-scan" in b]
    lines = [ln.split("  #")[0].strip() for ln in block.splitlines()]
    (slave,) = [ln for ln in lines if ln.startswith("mbus-slave ")]
    (py,) = [ln for ln in lines if ln.startswith("python -c ")]
    args = shlex.split(slave)[1:]
    assert args[:2] == ["--device", "tcp:20000"], slave
    s = tcp_factory(*args[2:])
    code = shlex.split(py)[2].replace(":20000", ":%d" % s.port)
    res = run_python(code, tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == r"b'\xe5'", res


def test_readme_tcp_system_calls_per_request(tmp_path):
    """The strace block of "M-Bus over TCP", as written (another port, another file):
    1000 requests cost about 1000 each of epoll_wait, recvfrom and sendto."""
    if not shutil.which("strace"):
        pytest.skip("needs strace (Debian: apt-get install strace)")
    text = readme()
    section = text[text.index("## M-Bus over TCP"):text.index("## Raspberry Pi")]
    (block,) = [b for b in shell_blocks(section) if "strace -c" in b]
    with socket.socket() as probe:   # a port free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    calls = tmp_path / "calls.txt"
    script = block.replace("20000", str(port)).replace("/tmp/calls.txt", str(calls))
    res = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    counts = dict((m.group(2), int(m.group(1))) for m in
                  re.finditer(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$",
                              res.stdout, re.M))
    if not counts and "Operation not permitted" in res.stdout + res.stderr:
        pytest.skip("strace may not attach here (ptrace not permitted)")
    for call in ("epoll_wait", "recvfrom", "sendto"):
        assert 1000 <= counts.get(call, 0) <= 1010, (counts, res.stdout[-800:], res.stderr)


# -- the MicroPython simulator ---------------------------------------------------------
def fresh_shell_env():
    """PATH as after `python3 -m venv .venv && .venv/bin/pip install -e '.[test]'` in a new
    shell: the venv is not activated."""
    venv_bins = {os.path.realpath(os.path.join(ROOT, ".venv", "bin"))}
    if sys.prefix != sys.base_prefix:   # the tests run in a venv: not on PATH either
        venv_bins.add(os.path.realpath(os.path.dirname(sys.executable)))
    keep = [p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
            if p and os.path.realpath(p) not in venv_bins]
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(keep)
    return env


def test_readme_upy_sim_command_from_a_fresh_shell(tmp_path):
    lines = command_lines("tools/upy-sim ")
    assert lines, "no upy-sim command in the README"
    if not os.access(os.path.join(ROOT, ".venv", "bin", "micropython"), os.X_OK):
        pytest.skip("the README's set-up command has not been run here (.venv/bin has no "
                    "micropython)")
    line = lines[0].replace("/tmp/state.json", str(tmp_path / "state.json"))
    proc = subprocess.Popen(shlex.split(line), cwd=ROOT, env=fresh_shell_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out = []
    try:
        pty = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ln = proc.stdout.readline()
            if not ln:
                break
            out.append(ln)
            m = re.match(r"Point your M-Bus master at (/dev/pts/\d+)$", ln.strip())
            if m:
                pty = m.group(1)
                break
        assert pty, "`%s` did not start:\n%s" % (line, "".join(out))
        with serial.Serial(pty, 2400, parity=serial.PARITY_EVEN, timeout=5) as ser:
            ser.write(short(0x40, 254))      # SND_NKE to the test address: E5
            assert ser.read(1) == b"\xe5"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rest, _ = proc.communicate()
        out.append(rest or "")
    assert proc.returncode == 0, "".join(out)
