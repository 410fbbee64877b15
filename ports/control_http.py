# Live control, the HTTP side: a JSON API and the web page (ports/web/), standard library
# only (http.server, one thread per connection). Handlers never touch the meters: every
# read and change goes through Controller.submit (ports/control_ops.py), which the run
# loop serves between frames.
import json
import logging
import os
import queue
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mbus_core.codec.model import ConfigError, meter_from_config
from mbus_ports import control_trace as _trace
from mbus_ports.control_ops import (ControlError, check_patch, check_record_change,
                                    check_fault, check_duration)
from mbus_ports.control_view import meter_json, meter_config

log = logging.getLogger("mbus-slave")

MAX_BODY = 64 * 1024       # a meter file of 250 records fits; more is refused (413)
MAX_CONNECTIONS = 256      # connections served at once; more get 503 at once
REQUEST_TIMEOUT = 10       # seconds a client may take to send its request
TRACE_KEEPALIVE = 15       # seconds between SSE comments on a quiet bus
WEB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "web")
WEB_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
             "/index.html": ("index.html", "text/html; charset=utf-8"),
             "/app.js": ("app.js", "text/javascript; charset=utf-8"),
             "/style.css": ("style.css", "text/css; charset=utf-8")}

_METER = re.compile(r"^/api/meters/([^/]+)$")
_RECORD = re.compile(r"^/api/meters/([^/]+)/records/([^/]+)$")
_FAULTS = re.compile(r"^/api/meters/([^/]+)/faults(?:/([^/]+))?$")


def _address(text):
    if not (text.isascii() and text.isdigit()) or int(text) > 250:
        raise ControlError(404, "bad meter address %r in the URL (want 0..250)" % text[:20])
    return int(text)


def _index(text):
    if not (text.isascii() and text.isdigit()) or len(text) > 4:
        raise ControlError(404, "bad record index %r in the URL (want 0, 1, ...)" % text[:20])
    return int(text)


class Handler(BaseHTTPRequestHandler):
    server_version = "mbus-slave-control"
    timeout = REQUEST_TIMEOUT

    def log_message(self, fmt, *args):
        log.debug("control %s: " + fmt, self.address_string(), *args)

    # -- plumbing ------------------------------------------------------------------
    def _send(self, status, body, ctype="application/json"):
        if not isinstance(body, bytes):
            body = (json.dumps(body, separators=(",", ":")) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status, message):
        self._send(status, {"error": " ".join(str(message).split())})

    def _body(self):
        """The request's JSON body (ControlError 4xx when missing, too big or bad)."""
        if self.headers.get("Transfer-Encoding"):
            raise ControlError(411, "send the body with a Content-Length")
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            raise ControlError(411, "a Content-Length is needed")
        n = int(length)
        if n > MAX_BODY:
            raise ControlError(413, "body of %d bytes refused (at most %d)" % (n, MAX_BODY))
        data = self.rfile.read(n)
        try:
            return json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ControlError(400, "bad JSON: %s" % e)
        except RecursionError:
            raise ControlError(400, "bad JSON: nested too deeply")

    def _dispatch(self, method):
        try:
            self._route(method, self.path.split("?", 1)[0])
        except ControlError as e:
            self.close_connection = True
            self._error(e.status, e.message)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
        except Exception as e:  # a gap in the checks: a 500, never a dead slave
            log.warning("control: %s %s failed: %s: %s", method, self.path[:80],
                        type(e).__name__, e)
            try:
                self._error(500, "internal error: %s" % type(e).__name__)
            except OSError:
                pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("GET")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # -- routes ----------------------------------------------------------------------
    def _route(self, method, path):
        ctl = self.server.controller
        if path in WEB_FILES:
            self._only(method, "GET")
            return self._static(*WEB_FILES[path])
        if path == "/api/meters":
            if method == "POST":
                return self._add_meter(ctl)
            self._only(method, "GET", "POST")
            raws = ctl.submit(ctl.snapshot)
            return self._send(200, [meter_json(r) for r in raws])
        if path == "/api/trace":
            self._only(method, "GET")
            return self._trace()
        if path == "/api/bus":
            self._only(method, "GET")
            cfg = ctl.submit(lambda: {"meters": [meter_config(s.meter)
                                                 for s in ctl.bus.slaves]})
            return self._send(200, cfg)
        m = _METER.match(path)
        if m:
            a = _address(m.group(1))
            if method == "GET":
                return self._send(200, self._meter(ctl, a))
            if method == "PATCH":
                changes = check_patch(self._body())
                a = ctl.submit(lambda: ctl.patch(a, changes))
                return self._send(200, self._meter(ctl, a))
            if method == "DELETE":
                ctl.submit(lambda: ctl.remove_meter(a))
                return self._send(200, {"removed": a})
            self._only(method, "GET", "PATCH", "DELETE")
        m = _RECORD.match(path)
        if m:
            a, i = _address(m.group(1)), _index(m.group(2))
            self._only(method, "PUT")
            change = check_record_change(self._body(), ctl.clock)
            ctl.submit(lambda: ctl.set_record(a, i, change))
            return self._send(200, self._meter(ctl, a)["records"][i])
        m = _FAULTS.match(path)
        if m:
            return self._faults(ctl, method, _address(m.group(1)), m.group(2))
        raise ControlError(404, "no such resource %r (see GET /api/meters)" % path[:60])

    def _only(self, method, *allowed):
        if method not in allowed:
            raise ControlError(405, "%s is not allowed here (allowed: %s)"
                               % (method, ", ".join(allowed)))

    def _meter(self, ctl, a):
        def one():
            for raw in ctl.snapshot():
                if raw["address"] == a:
                    return raw
            raise ControlError(404, "no meter at primary address %d" % a)
        return meter_json(ctl.submit(one))

    def _add_meter(self, ctl):
        cfg = self._body()
        if not isinstance(cfg, dict) or "meters" in cfg:
            raise ControlError(400, "want one meter as in a meter file (a JSON object)")
        try:
            meter = meter_from_config(cfg, len(ctl.meters), ctl.clock)
        except (ConfigError, ValueError, TypeError, KeyError) as e:
            raise ControlError(400, str(e))
        a = ctl.submit(lambda: ctl.add_meter(meter))
        return self._send(201, self._meter(ctl, a))

    def _faults(self, ctl, method, a, number):
        if method == "POST" and number is None:
            body = self._body()
            if not isinstance(body, dict) or "fault" not in body or \
                    set(body) - {"fault", "duration"}:
                raise ControlError(400, 'want {"fault": "drop:0.5"} and optionally '
                                   '"duration": seconds')
            f = check_fault(body["fault"], a)
            d = check_duration(body.get("duration"))
            n = ctl.submit(lambda: ctl.fault_on(a, f, d))
            return self._send(201, {"id": n, "spec": f.spec(), "duration": d})
        if method == "DELETE":
            k = _index(number) if number is not None else None
            gone = ctl.submit(lambda: ctl.faults_off(a, k))
            return self._send(200, {"removed": gone})
        if method == "GET" and number is None:
            return self._send(200, self._meter(ctl, a)["faults"])
        raise ControlError(405, "%s is not allowed here" % method)

    def _static(self, name, ctype):
        try:
            with open(os.path.join(WEB_DIR, name), "rb") as f:
                body = f.read()
        except OSError:
            raise ControlError(404, "%s is not installed" % name)
        self._send(200, body, ctype)

    def _trace(self):
        hub = self.server.hub
        q = hub.subscribe()
        if q is None:
            raise ControlError(503, "too many trace clients (%d); close one" % hub.max_clients)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b": mbus-slave bus trace\n\n")
            self.wfile.flush()
            while not self.server.closing:
                try:
                    item = q.get(timeout=TRACE_KEEPALIVE)
                except queue.Empty:
                    self.wfile.write(b": keepalive\n\n")
                    self.wfile.flush()
                    continue
                data = json.dumps(_trace.event(item), separators=(",", ":"))
                self.wfile.write(("data: %s\n\n" % data).encode())
                self.wfile.flush()
        finally:
            hub.unsubscribe(q)
            self.close_connection = True


class ControlServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, controller, hub):
        self.controller = controller
        self.hub = hub
        self.closing = False
        self._active = 0
        self._count_lock = threading.Lock()
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        ThreadingHTTPServer.__init__(self, address, Handler)

    def process_request(self, request, client_address):
        with self._count_lock:
            full = self._active >= MAX_CONNECTIONS
            if not full:
                self._active += 1
        if full:   # answered here, in a few bytes, without a thread
            try:
                request.settimeout(1)
                body = b'{"error":"too many connections"}\n'
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: "
                                b"application/json\r\nContent-Length: %d\r\nConnection: "
                                b"close\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        ThreadingHTTPServer.process_request(self, request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            ThreadingHTTPServer.process_request_thread(self, request, client_address)
        finally:
            with self._count_lock:
                self._active -= 1

    def handle_error(self, request, client_address):
        log.debug("control: connection from %s failed", client_address, exc_info=True)

    def url(self):
        host, port = self.server_address[:2]
        return "http://%s:%d/" % ("[%s]" % host if ":" in host else host, port)

    def start(self):
        t = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.5},
                             name="mbus-control", daemon=True)
        t.start()
        return t

    def close(self):
        self.closing = True
        self.shutdown()
        self.server_close()
