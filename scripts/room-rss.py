#!/usr/bin/env python3
"""Server memory (RSS) per room membership and per empty room.

The issue's targets: at most 150 B per membership, and at most 1 KiB per room beyond its history.

The method of scripts/idle-rss.py: a fresh server per test and run (`--cores 2 --rate-limit 0`,
on a free loopback port), its VmRSS from /proc/PID/status read after the clients are logged in
(the baseline), after the first half of the work and after the second; each reading follows a
pause of SETTLE seconds with every client reading all the server sends it, so that no output stays
queued in the server. Two figures per test: the whole delta over the baseline divided by the
count, and the second half's slope, which leaves out one-off costs (maps and vectors growing, a
room's creation in the membership test).

- memberships: CLIENTS clients each join ROOMS_PER_CLIENT of ROOMS rooms, one room per client per
  wave (client i's j-th room is (i + j * ROOMS / ROOMS_PER_CLIENT) mod ROOMS, so every room has
  the same number of members and the first wave already creates them all).
- big-room: CLIENTS clients join one room, in waves of 1,000.
- empty-rooms: EMPTY_CLIENTS clients join and leave EMPTY_ROOMS distinct rooms (names like
  `empty-000123`), 10 at a time each; nothing is posted, so each room is left with an empty
  history, and it stays until `--room-idle-ttl` (60m here) has passed.

jemalloc keeps freed pages for a while (dirty_decay_ms, 10 s by default), so what the joins'
transient output left behind may still count in RSS after a short SETTLE; `--malloc-conf
dirty_decay_ms:0,muzzy_decay_ms:0` (the server's _RJEM_MALLOC_CONF) shows the figure without it.

Usage: scripts/room-rss.py [--runs 3] [--json]   (see --help for the rest)
"""
import argparse
import asyncio
import json
import os
import shlex
import sys
import time

from chat_server import HOST, Server, default_server, frame
TESTS = ("memberships", "big-room", "empty-rooms")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS: is the server running?")


class Client(asyncio.Protocol):
    """A logged-in connection that reads everything and counts the replies it waits for. Frames
    are counted by their opening bytes: `{"type":"…"` starts a frame and cannot occur inside one,
    where quotes are escaped."""

    COUNTED = {b'{"type":"connect_response"': "connect", b'{"type":"join_response"': "join",
               b'{"type":"leave_response"': "leave", b'{"type":"error"': "error"}
    KEEP = max(len(prefix) for prefix in COUNTED) - 1

    def __init__(self, name):
        self.name = name
        self.transport = None
        self.tail = b""
        self.counts = dict.fromkeys(self.COUNTED.values(), 0)
        self.first_error = None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(frame(type="connect", content=self.name))

    def data_received(self, data):
        buf = self.tail + data
        for prefix, kind in self.COUNTED.items():
            self.counts[kind] += buf.count(prefix)
        if self.first_error is None and b'{"type":"error"' in buf:
            start = buf.index(b'{"type":"error"')
            self.first_error = buf[start:buf.find(b"\n", start)].decode(errors="replace")
        self.tail = buf[-self.KEEP:]

    def send(self, data):
        self.transport.write(data)


async def until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


async def log_in(port, count, timeout, batch=1000):
    loop = asyncio.get_running_loop()
    clients = [Client(f"u{i}") for i in range(count)]
    for start in range(0, count, batch):
        group = clients[start:start + batch]
        await asyncio.gather(*(loop.create_connection(lambda c=c: c, HOST, port) for c in group))
        await until(lambda: all(c.counts["connect"] for c in group), timeout, "logins")
    return clients


async def settle_and_read(server, settle):
    """Waits SETTLE seconds while the clients keep reading, then reads the server's RSS."""
    await asyncio.sleep(settle)
    return rss_kib(server.pid)


async def joins(clients, rooms_of, timeout):
    """Each client joins the rooms `rooms_of(client index)` names, all clients at once; waits for
    every join_response."""
    expected = []
    for i, client in enumerate(clients):
        rooms = rooms_of(i)
        client.send(b"".join(frame(type="join", room=room) for room in rooms))
        expected.append(client.counts["join"] + len(rooms))
    await until(lambda: all(c.counts["join"] >= n for c, n in zip(clients, expected)), timeout,
                "join_responses")


async def leaves(clients, rooms_of, timeout):
    expected = []
    for i, client in enumerate(clients):
        rooms = rooms_of(i)
        client.send(b"".join(frame(type="leave", room=room) for room in rooms))
        expected.append(client.counts["leave"] + len(rooms))
    await until(lambda: all(c.counts["leave"] >= n for c, n in zip(clients, expected)), timeout,
                "leave_responses")


async def memberships(server, args):
    clients = await log_in(server.port, args.clients, args.timeout)
    stride = args.rooms // args.rooms_per_client
    room = lambda i, j: f"room-{(i + j * stride) % args.rooms}"
    readings = [await settle_and_read(server, args.settle)]
    half = args.rooms_per_client // 2
    for waves in (range(half), range(half, args.rooms_per_client)):
        for j in waves:
            await joins(clients, lambda i: [room(i, j)], args.timeout)
        readings.append(await settle_and_read(server, args.settle))
    counts = (args.clients * half, args.clients * (args.rooms_per_client - half))
    return clients, readings, counts, "membership"


async def big_room(server, args):
    clients = await log_in(server.port, args.clients, args.timeout)
    readings = [await settle_and_read(server, args.settle)]
    half = args.clients // 2
    for part in (clients[:half], clients[half:]):
        for start in range(0, len(part), 1000):
            await joins(part[start:start + 1000], lambda i: ["big"], args.timeout)
        readings.append(await settle_and_read(server, args.settle))
    return clients, readings, (half, args.clients - half), "membership"


async def empty_rooms(server, args):
    clients = await log_in(server.port, args.empty_clients, args.timeout)
    per_client = args.empty_rooms // args.empty_clients
    readings = [await settle_and_read(server, args.settle)]
    batch = 10
    half = per_client // 2
    for span in ((0, half), (half, per_client)):
        for start in range(span[0], span[1], batch):
            end = min(start + batch, span[1])
            names = lambda i: [f"empty-{i * per_client + k:06d}" for k in range(start, end)]
            await joins(clients, names, args.timeout)
            await leaves(clients, names, args.timeout)
        readings.append(await settle_and_read(server, args.settle))
    counts = (args.empty_clients * half, args.empty_clients * (per_client - half))
    return clients, readings, counts, "room"


async def measure(test, server, args):
    run = {"memberships": memberships, "big-room": big_room, "empty-rooms": empty_rooms}[test]
    clients, (base, first, second), (n1, n2), unit = await run(server, args)
    errors = sum(c.counts["error"] for c in clients)
    sample = next((c.first_error for c in clients if c.first_error), None)
    for client in clients:
        client.transport.close()
    return {
        "test": test,
        "unit": unit,
        "count": n1 + n2,
        "rss_kib": [base, first, second],
        "bytes_per_unit": (second - base) * 1024 / (n1 + n2),
        "first_half_bytes_per_unit": (first - base) * 1024 / n1,
        "slope_bytes_per_unit": (second - first) * 1024 / n2,
        "error_frames": errors,
        "first_error": sample,
    }


def run_once(test, args):
    # Empty rooms must stay for the whole test; jemalloc's options come through its environment.
    extra = ["--room-idle-ttl", "60m", *shlex.split(args.server_args)]
    env = {"_RJEM_MALLOC_CONF": args.malloc_conf} if args.malloc_conf else None
    server = Server(args.server, extra, env)
    try:
        result = asyncio.run(measure(test, server, args))
    finally:
        code = server.stop()
    result["server_exit_code"] = code
    result["server_log"] = server.output().splitlines()[-20:]
    return result


def describe(r):
    base, first, second = r["rss_kib"]
    line = (f"{r['test']}: {r['count']} {r['unit']}s, RSS {base} -> {first} -> {second} KiB: "
            f"{r['bytes_per_unit']:.0f} B/{r['unit']} overall, first half "
            f"{r['first_half_bytes_per_unit']:.0f}, second half (slope) "
            f"{r['slope_bytes_per_unit']:.0f}")
    if r["error_frames"]:
        line += f"\n  {r['error_frames']} error frames, e.g. {r['first_error']}"
    if r["server_log"]:
        line += "\n  server log: " + "\n  ".join(r["server_log"])
    if r["server_exit_code"] != 0:
        line += f"\n  server exit code {r['server_exit_code']}"
    return line


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--server", default=default_server(),
                        help="uring-chat binary (env URING_CHAT_BIN, else $CARGO_TARGET_DIR or "
                             "target/release)")
    parser.add_argument("--tests", default=",".join(TESTS),
                        help="comma-separated: " + ", ".join(TESTS))
    parser.add_argument("--clients", type=int, default=10000,
                        help="clients of the memberships and big-room tests")
    parser.add_argument("--rooms", type=int, default=1000, help="rooms of the memberships test")
    parser.add_argument("--rooms-per-client", type=int, default=10,
                        help="rooms each client joins in the memberships test")
    parser.add_argument("--empty-rooms", type=int, default=50000)
    parser.add_argument("--empty-clients", type=int, default=1000,
                        help="clients that create the empty rooms")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds to wait before each RSS reading")
    parser.add_argument("--server-args", default="",
                        help="more server flags, one string (e.g. '--user-list-limit 1')")
    parser.add_argument("--malloc-conf", default="",
                        help="the server's _RJEM_MALLOC_CONF, "
                             "e.g. dirty_decay_ms:0,muzzy_decay_ms:0")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per wait")
    parser.add_argument("--runs", type=int, default=1,
                        help="runs of each test, each on a fresh server")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()
    tests = args.tests.split(",")
    if unknown := set(tests) - set(TESTS):
        parser.error(f"unknown tests: {', '.join(sorted(unknown))}")
    if args.rooms % args.rooms_per_client or args.empty_rooms % args.empty_clients:
        parser.error("--rooms-per-client must divide --rooms, --empty-clients --empty-rooms")

    out = sys.stderr if args.json else sys.stdout
    results = []
    for test in tests:
        for _ in range(args.runs):
            results.append(run_once(test, args))
            print(describe(results[-1]), file=out, flush=True)
        if args.runs > 1:
            mine = [r for r in results if r["test"] == test]
            for key in ("bytes_per_unit", "slope_bytes_per_unit"):
                values = [r[key] for r in mine]
                print(f"  {test} {key}: {min(values):.0f} to {max(values):.0f}", file=out)
    if args.json:
        print(json.dumps({"runs": results, "nproc": os.cpu_count(),
                          "kernel": os.uname().release}))


if __name__ == "__main__":
    main()
