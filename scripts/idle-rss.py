#!/usr/bin/env python3
"""RSS per idle logged-in connection of a running uring-chat server.

Usage: scripts/idle-rss.py PORT CONNECTIONS SERVER_PID [--ws] [--tls CA_FILE]

With --ws, PORT is the HTTP port and the clients are WebSocket clients of `/ws`. With --tls, the
clients speak TLS to a server started with --tls-cert/--tls-key, trusting CA_FILE (both: wss).

Opens CONNECTIONS/2 idle connections, logs them in, waits for presence traffic to settle, reads the
server's VmRSS, then does the same again. The second step's slope excludes one-off costs (rings
touched for the first time, maps growing) from the per-connection figure. Start the server fresh:
`target/release/uring-chat --cores 2 --port PORT --log-level warn &`.
"""
import json
import socket
import sys
import time

port, n, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
websocket = "--ws" in sys.argv[4:]
tls = None
if "--tls" in sys.argv[4:]:
    import ssl
    tls = ssl.create_default_context(cafile=sys.argv[sys.argv.index("--tls") + 1])
socks = []
UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


def login_bytes(name):
    frame = json.dumps({"type": "connect", "content": name}).encode()
    if not websocket:
        return frame + b"\n"
    # One masked text frame (a zero mask leaves the payload as is; RFC 6455 allows any key).
    assert len(frame) < 126
    return UPGRADE + bytes([0x81, 0x80 | len(frame), 0, 0, 0, 0]) + frame


def rss_kib():
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS: is the server running?")


def add(count):
    new = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        if tls:
            s = tls.wrap_socket(s, server_hostname="localhost")
        name = f"idle{len(socks) + len(new)}"
        s.sendall(login_bytes(name))
        new.append(s)
    for s in new:
        s.settimeout(5)
        buf = b""
        while b"connect_response" not in buf:
            buf += s.recv(65536)
    socks.extend(new)
    time.sleep(1.0)
    # Read what presence sent, so nothing stays queued in the server for these clients.
    for s in socks:
        s.setblocking(False)
        try:
            while s.recv(1 << 20):
                pass
        except OSError:  # nothing more to read: BlockingIOError, or ssl.SSLWantReadError
            pass
    time.sleep(0.3)


base = rss_kib()
add(n // 2)
first = rss_kib()
add(n // 2)
second = rss_kib()
print(f"baseline {base} KiB; {n // 2} connections {first} KiB; {n} connections {second} KiB")
print(f"first half {(first - base) * 1024 / (n // 2):.0f} B/connection; "
      f"second half (slope) {(second - first) * 1024 / (n // 2):.0f} B/connection")
