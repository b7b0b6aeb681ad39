"""The health endpoint against hostile or stuck things: garbage HTTP, floods of
idle and parked connections, many loopback sources against a monitor's check,
and one wedged I/O thread (liveness and the systemd watchdog)."""

import http.client
import os
import select
import socket
import time

import lab
from health_lab import code


def test_hostile_http_never_blocks_the_server_or_the_relay(echo_pair):
    pair, _ = echo_pair
    host, port = pair.server.health_address.rsplit(":", 1)
    address = (host, int(port))
    fds_before = pair.server.fd_count()

    def exchange(raw, timeout=5):
        with socket.create_connection(address, timeout=timeout) as s:
            s.sendall(raw)
            data = b""
            try:
                while chunk := s.recv(65536):
                    data += chunk
            except (ConnectionResetError, socket.timeout):
                pass
            return data

    assert exchange(b"\x16\x03\x01\x02\x00garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert exchange(b"GET /readiness HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431")
    assert exchange(b"POST /readiness HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"a" * 100000).startswith(
        b"HTTP/1.1 413")
    assert exchange(b"GET /readiness HTTP/1.1\r\nContent-Length: -5\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert exchange(b"BREW /readiness HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 4")

    # A slow client (half a request, then silence) and 200 idle connections at once.
    slow = socket.create_connection(address)
    slow.sendall(b"GET /readi")
    flood = [socket.create_connection(address, timeout=2) for _ in range(200)]  # all 200, or the test fails
    # Loopback is one source with 8 sessions, and the slow client holds one: 7
    # of the flood are kept (none has had its 5 s yet, so none is evicted) and
    # exactly 193 are closed at accept. Wait for those closes, then count.
    closed = set()

    def count_closed():
        readable, _, _ = select.select([s for s in flood if s not in closed], [], [], 0.2)
        for s in readable:
            try:
                if s.recv(1) == b"":
                    closed.add(s)
            except ConnectionResetError:
                closed.add(s)
        return len(closed) >= 193

    lab.wait_for(count_closed, timeout=4, what="193 flood connections closed at accept")
    assert len(closed) == 193, len(closed)
    # Meanwhile the relay is untouched.
    conn = pair.connect()
    conn.sendall(b"ping")
    assert conn.recv(4) == b"ping"
    conn.close()
    # Once the flood goes (or times out after 5 s), the endpoint answers again.
    for s in flood:
        s.close()
    lab.wait_for(lambda: code(pair.server, "/liveness") == 200, timeout=10, what="health answers after the flood")
    started = time.monotonic()
    slow.settimeout(10)
    assert slow.recv(100) == b""  # the slow client was cut after 5 s
    slow.close()
    assert time.monotonic() - started < 7
    assert pair.server.proc.poll() is None
    lab.wait_for(lambda: pair.server.fd_count() <= fds_before + 2, timeout=10, what="no fd leaked")


def test_parked_keep_alive_sockets_never_hold_monitors_out(echo_pair):
    """64 keep-alive sessions parked by one client used to fill every slot, so
    HAProxy's checks were refused and the node marked down. Now a source has at
    most 8 and displaces its own idlest: monitors from any address get answers."""
    pair, _ = echo_pair
    host, port = pair.server.health_address.rsplit(":", 1)
    parked = []
    for _ in range(64):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.connect((host, int(port)))
        s.sendall(b"GET /liveness HTTP/1.1\r\nHost: x\r\n\r\n")  # answered, then kept alive and idle
        parked.append(s)
    for who in ("127.0.0.3", "127.0.0.2", "127.0.0.1"):  # another host, the hog itself, loopback
        for _ in range(5):
            c = http.client.HTTPConnection(host, int(port), timeout=3, source_address=(who, 0))
            c.request("GET", "/liveness")
            assert c.getresponse().status == 200, who
            c.close()
    # The hog kept at most 8 of its sockets; the rest were closed.
    still_open = 0
    for s in parked:
        s.setblocking(False)
        closed = False
        try:
            while True:  # the buffered answer, then EOF if the server closed it
                if s.recv(65536) == b"":
                    closed = True
                    break
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed = True
        still_open += not closed
    assert still_open <= 8, still_open
    for s in parked:
        s.close()


def test_a_flood_from_many_loopback_addresses_never_cuts_a_monitors_check(echo_pair):
    """A local user has all of 127/8: 64 connections from 64 loopback addresses
    filled the old server's 64 sessions, and the 64th evicted the oldest idle
    one, a monitor that had connected and was about to send its check (EOF).
    Now loopback is one source (8 sessions), and a session that has not had its
    first request's deadline yet is never evicted."""
    pair, _ = echo_pair
    host, port = pair.server.health_address.rsplit(":", 1)
    monitor = socket.create_connection((host, int(port)), timeout=5)
    flood = []
    for i in range(64):
        s = socket.socket()
        s.bind((f"127.0.1.{10 + i}", 0))
        s.connect((host, int(port)))
        flood.append(s)
    for s in flood:
        s.setblocking(False)

    def refused():
        n = 0
        for s in flood:
            try:
                n += s.recv(1) == b""
            except BlockingIOError:
                pass
            except ConnectionResetError:
                n += 1
        return n

    seen = 0
    deadline = time.monotonic() + 3
    while seen < 64 - 8 and time.monotonic() < deadline:  # all but loopback's 8 places refused
        seen += refused()
        time.sleep(0.05)
    monitor.sendall(b"GET /liveness HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := monitor.recv(65536):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    monitor.close()
    for s in flood:
        s.close()


class ThreadStop:
    """Stops one thread of another process (PTRACE_SEIZE + PTRACE_INTERRUPT act on
    that thread alone; SIGSTOP would stop them all) until resume()."""
    SEIZE, INTERRUPT, DETACH, WALL = 0x4206, 0x4207, 17, 0x40000000

    def __init__(self, tid):
        import ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        self.tid = tid
        for op in (self.SEIZE, self.INTERRUPT):
            if self.libc.ptrace(op, tid, None, None) != 0:
                raise OSError(ctypes.get_errno(), f"ptrace {op:#x} on thread {tid}")
        os.waitpid(tid, self.WALL)  # the thread is in its ptrace stop now

    def resume(self):
        self.libc.ptrace(self.DETACH, self.tid, None, None)


def thread_named(pid, name):
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().strip() == name:
                return int(tid)
    raise LookupError(f"no thread {name} in {pid}")


def test_one_wedged_io_thread_fails_liveness_and_stops_the_watchdog(echo_pair):
    """Only one I/O thread stuck (not the whole process, whose other threads still
    answer HTTP): /liveness says so within the 5 s heartbeat bound, WATCHDOG=1
    stops (so systemd's watchdog restarts the unit), and both come back when the
    thread runs again."""
    pair, _ = echo_pair
    c = pair.client
    c.stop()
    c.start(env={"WATCHDOG_USEC": "1000000"})  # WatchdogSec=1s: WATCHDOG=1 every 0.5 s
    lab.wait_for(lambda: c.poll_notifications().count("WATCHDOG=1") >= 2, timeout=5, what="WATCHDOG=1")
    assert code(c, "/liveness") == 200
    stopped = ThreadStop(thread_named(c.proc.pid, "td-io-0"))
    try:
        wedged_at = time.monotonic()
        lab.wait_for(lambda: code(c, "/liveness") == 503, timeout=10, what="/liveness 503")
        assert time.monotonic() - wedged_at < 8
        assert "an I/O thread did not answer its heartbeat" in c.http("/liveness")[2] + c.http("/readiness")[2]
        # STATUS= says it too; from then on no WATCHDOG=1 for four of its periods
        # (a negative: an observation window is the only way to see it).
        lab.wait_for(lambda: "STATUS=client-1: an I/O thread did not answer its heartbeat" in c.poll_notifications(),
                     timeout=5, what="STATUS= naming the wedged thread")
        watchdogs = c.poll_notifications().count("WATCHDOG=1")
        time.sleep(2)
        assert c.poll_notifications().count("WATCHDOG=1") == watchdogs, "WATCHDOG=1 went on with a wedged thread"
    finally:
        stopped.resume()
    lab.wait_for(lambda: code(c, "/liveness") == 200, timeout=5, what="/liveness 200 again")
    lab.wait_for(lambda: c.poll_notifications().count("WATCHDOG=1") > watchdogs, timeout=5, what="WATCHDOG=1 again")
