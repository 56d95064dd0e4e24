#!/usr/bin/env python3
"""Recovery storm: many members of one room drop at once and rejoin with `since`, all at once.

The issue's target: 1,000 members of one room drop and rejoin at once, each 100 messages behind;
all recover gap-free, and the last replay completes within 1 s.

Each run starts a fresh release server (`--cores 2 --rate-limit 0`, on a free loopback port), then:

1. a poster and MEMBERS members log in and join ROOM; the poster posts WARMUP messages, which every
   member must receive; each member remembers the last seq it saw;
2. every member closes its socket at once; once the server has taken them all out of the room
   (a `members` page says so), the poster posts BEHIND messages, so every member is BEHIND behind;
3. the storm: every member reconnects, logs in under a new name and joins with `since` = its last
   seq, all at once; from the first reconnect on the poster posts RATE messages/s, until TAIL
   seconds after the last replay has completed;
4. each member checks: the join_response says `recovered: true`, and from it on the member got
   every seq after its `since`, up to the poster's last, exactly once and in order. The exit
   status is 1 unless every member passed.

Replay completion for a member is the moment it holds the seq its join_response named (the room's
last seq when the owner took the join): timed from its own join frame, and for the whole storm
from the first join frame sent to the last member done. Times are taken by this client, so they
include its own reading and parsing: the client's CPU over the storm is reported beside the
server's (utime + stime from /proc/PID/stat, storm start to last replay done).

Whatever is posted before a member's join reaches the owner adds to its lag, reported as "behind
when the owner took the join": with RATE > 0 and `--history-messages` equal to BEHIND, a member
whose join comes after even one storm post is more than the history behind, and gets
`recovered: false`.

Usage: scripts/recovery-storm.py [--runs 3] [--json]   (see --help for the rest)
"""
import argparse
import asyncio
import json
import os
import re
import shlex
import sys
import time

from chat_server import HOST, Server, default_server, frame
SEQ_IN_JOIN = re.compile(rb'\\"seq\\":(\d+)')
RECOVERED_IN_JOIN = re.compile(rb'\\"recovered\\":(true|false)')
MEMBER_COUNT = re.compile(rb'\\"memberCount\\":(\d+)')


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Client(asyncio.Protocol):
    """One connection: splits what arrives into lines and hands each to `line`."""

    def __init__(self, name, port):
        self.name = name
        self.port = port
        self.transport = None
        self.tail = b""
        self.logged_in = asyncio.get_running_loop().create_future()
        self.errors = []

    def connection_made(self, transport):
        self.transport = transport
        transport.write(frame(type="connect", content=self.name))

    def data_received(self, data):
        now = time.monotonic()
        lines = (self.tail + data).split(b"\n")
        self.tail = lines.pop()
        for line in lines:
            if line.startswith(b'{"type":"chat"'):
                self.chat(int(line[line.rindex(b'"seq":') + 6:-1]), now)
            elif line.startswith(b'{"type":"presence"'):
                pass
            elif line.startswith(b'{"type":"connect_response"'):
                self.logged_in.set_result(now)
            else:
                self.line(line, now)

    def connection_lost(self, exc):
        if not self.logged_in.done():
            self.logged_in.set_exception(ConnectionError(f"{self.name}: closed before login"))

    def chat(self, seq, now):
        pass

    def line(self, line, now):
        if line.startswith(b'{"type":"error"'):
            self.errors.append(line.decode(errors="replace"))

    def send(self, data):
        self.transport.write(data)


class Member(Client):
    """A room member: what it saw before the drop; after its rejoin, every seq in arrival order."""

    def __init__(self, name, port, room, storm=None, since=None):
        super().__init__(name, port)
        self.room = room
        self.storm = storm
        self.since = since
        self.last_seq = None
        self.join_seq = None
        self.recovered = None
        self.early = 0
        self.seqs = []
        self.join_sent = self.replay_done = None

    def join(self):
        if self.since is None:
            self.send(frame(type="join", room=self.room))
        else:
            self.send(frame(type="join", room=self.room, since=str(self.since)))
        self.join_sent = time.monotonic()

    def line(self, line, now):
        if line.startswith(b'{"type":"join_response"'):
            head = line[:400]
            self.join_seq = int(SEQ_IN_JOIN.search(head).group(1))
            found = RECOVERED_IN_JOIN.search(head)
            self.recovered = found is not None and found.group(1) == b"true"
            if self.last_seq is None:
                self.last_seq = self.join_seq
            if self.storm and self.join_seq <= self.since:
                self.done(now)
        else:
            super().line(line, now)

    def chat(self, seq, now):
        if self.join_seq is None:
            self.early += 1
            return
        self.last_seq = seq
        if self.storm:
            self.seqs.append(seq)
            if seq == self.join_seq:
                self.done(now)

    def done(self, now):
        if self.replay_done is None:
            self.replay_done = now
            self.storm.replayed(now)


class Poster(Member):
    """The room member that posts; it sees its own messages come back with their seqs."""

    def __init__(self, port, room, payload):
        super().__init__("poster", port, room)
        self.body = "x" * payload
        self.posted = 0
        self.member_count = None

    def post(self, count=1):
        self.send(frame(type="chat", room=self.room, content=self.body) * count)
        self.posted += count

    def ask_members(self):
        self.member_count = None
        self.send(frame(type="members", room=self.room, content="0"))

    def line(self, line, now):
        if line.startswith(b'{"type":"member_list"'):
            self.member_count = int(MEMBER_COUNT.search(line).group(1))
        else:
            super().line(line, now)


class Storm:
    """Counts replays completed and takes the server's CPU when the last one completes."""

    def __init__(self, members, server_pid):
        self.left = members
        self.server_pid = server_pid
        self.all_done = asyncio.get_running_loop().create_future()

    def replayed(self, now):
        self.left -= 1
        if self.left == 0:
            self.all_done.set_result((now, cpu_seconds(self.server_pid), time.process_time()))


async def until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.005)


async def connect(member):
    loop = asyncio.get_running_loop()
    await loop.create_connection(lambda: member, HOST, member.port)
    await member.logged_in
    member.join()


async def post_steadily(poster, rate, stop):
    """Posts at `rate` per second on a fixed schedule until `stop` is set. While the client's loop
    is busy (the storm's logins and replays), the posts that fell due meanwhile go out together."""
    loop = asyncio.get_running_loop()
    start, sent = loop.time(), 0
    while not stop.is_set():
        due = int((loop.time() - start) * rate) + 1
        poster.post(due - sent)
        sent = due
        await asyncio.sleep(max(0.0, start + sent / rate - loop.time()))


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def storm_run(args, server):
    room = args.room
    poster = Poster(server.port, room, args.payload)
    await connect(poster)
    await until(lambda: poster.join_seq is not None, args.timeout, "the poster's join")

    first = [Member(f"m{i}", server.port, room) for i in range(args.members)]
    await asyncio.gather(*(connect(m) for m in first))
    await until(lambda: all(m.join_seq is not None for m in first), args.timeout, "first joins")
    poster.post(args.warmup)
    await until(lambda: all(m.last_seq == args.warmup for m in first + [poster]), args.timeout,
                "warm-up messages")

    for member in first:
        member.transport.close()

    async def room_emptied():
        while True:
            poster.ask_members()
            await until(lambda: poster.member_count is not None, args.timeout, "member_list")
            if poster.member_count == 1:
                return
            await asyncio.sleep(0.05)
    await asyncio.wait_for(room_emptied(), args.timeout)
    poster.post(args.behind)
    behind_seq = args.warmup + args.behind
    await until(lambda: poster.last_seq == behind_seq, args.timeout, "the backlog's posts")

    storm = Storm(args.members, server.pid)
    second = [Member(f"m{i}-again", server.port, room, storm, since=m.last_seq)
              for i, m in enumerate(first)]
    stop = asyncio.Event()
    cpu_start, client_cpu_start = cpu_seconds(server.pid), time.process_time()
    storm_start = time.monotonic()
    posting = asyncio.ensure_future(post_steadily(poster, args.rate, stop)) if args.rate else None
    await asyncio.gather(*(connect(m) for m in second))
    logins_done = max(m.logged_in.result() for m in second)
    timed_out = False
    try:
        done_at, cpu_end, client_cpu_end = await asyncio.wait_for(storm.all_done, args.timeout)
    except asyncio.TimeoutError:
        timed_out = True
        done_at, cpu_end, client_cpu_end = (time.monotonic(), cpu_seconds(server.pid),
                                            time.process_time())
    await asyncio.sleep(args.tail)
    stop.set()
    if posting:
        await posting
    final = poster.posted
    try:
        await until(lambda: poster.last_seq == final
                    and all(m.last_seq == final for m in second), args.timeout, "the last post")
    except TimeoutError:
        timed_out = True
    for member in second + [poster]:
        member.transport.close()

    failures = {"not_recovered": 0, "no_join_response": 0, "replay_incomplete": 0,
                "members_with_gaps": 0, "missing_seqs": 0, "members_with_duplicates": 0,
                "duplicate_frames": 0, "members_out_of_order": 0, "frames_before_join_response": 0}
    ok = 0
    for member in second:
        expected = range(member.since + 1, final + 1)
        seen = set(member.seqs)
        failures["no_join_response"] += member.join_seq is None
        failures["not_recovered"] += member.join_seq is not None and not member.recovered
        failures["replay_incomplete"] += member.replay_done is None
        missing = len(set(expected) - seen)
        failures["missing_seqs"] += missing
        failures["members_with_gaps"] += missing > 0
        duplicates = len(member.seqs) - len(seen)
        failures["duplicate_frames"] += duplicates
        failures["members_with_duplicates"] += duplicates > 0
        failures["members_out_of_order"] += any(b < a for a, b in zip(member.seqs, member.seqs[1:]))
        failures["frames_before_join_response"] += member.early
        ok += bool(member.recovered) and member.seqs == list(expected)

    first_join = min(m.join_sent for m in second if m.join_sent)
    per_member = [m.replay_done - m.join_sent for m in second if m.replay_done]
    lag = [m.join_seq - m.since for m in second if m.join_seq is not None]
    errors = [e for m in first + second + [poster] for e in m.errors]
    return {
        "members": args.members,
        "behind": args.behind,
        "rate": args.rate,
        "recovered_gap_free": ok,
        "failures": failures,
        "timed_out": timed_out,
        "storm_posts": poster.posted - args.warmup - args.behind,
        "behind_at_join_min": min(lag, default=None),
        "behind_at_join_max": max(lag, default=None),
        "final_seq": final,
        "logins_s": logins_done - storm_start,
        "first_join_to_last_replay_s": done_at - first_join,
        "storm_start_to_last_replay_s": done_at - storm_start,
        "replay_p50_s": percentile(per_member, 50) if per_member else None,
        "replay_p99_s": percentile(per_member, 99) if per_member else None,
        "replay_max_s": max(per_member) if per_member else None,
        "server_cpu_s": cpu_end - cpu_start,
        "client_cpu_s": client_cpu_end - client_cpu_start,
        "errors": errors[:10],
        "error_count": len(errors),
    }


def run_once(args):
    extra = shlex.split(args.server_args)
    if args.history_messages is not None:
        extra += ["--history-messages", str(args.history_messages)]
    server = Server(args.server, extra)
    try:
        result = asyncio.run(storm_run(args, server))
    finally:
        code = server.stop()
    result["server_exit_code"] = code
    result["server_log"] = server.output().splitlines()[-20:]
    return result


def summary(run, r):
    ms = lambda s: "n/a" if s is None else f"{s * 1000:.0f} ms"
    bad = ", ".join(f"{k} {v}" for k, v in r["failures"].items() if v) or "none"
    lines = [
        f"run {run}: {r['recovered_gap_free']}/{r['members']} recovered gap-free "
        f"({r['behind']} behind, {r['storm_posts']} posts at {r['rate']}/s during the storm, "
        f"last seq {r['final_seq']}){'; TIMED OUT' if r['timed_out'] else ''}",
        f"  behind when the owner took the join: {r['behind_at_join_min']} to "
        f"{r['behind_at_join_max']}; failures: {bad}",
        f"  first join sent -> last replay done {ms(r['first_join_to_last_replay_s'])} "
        f"(storm start -> last replay {ms(r['storm_start_to_last_replay_s'])}, "
        f"logins took {ms(r['logins_s'])})",
        f"  per-member replay p50 {ms(r['replay_p50_s'])}, p99 {ms(r['replay_p99_s'])}, "
        f"max {ms(r['replay_max_s'])}",
        f"  CPU over the storm: server {r['server_cpu_s']:.2f} s, client {r['client_cpu_s']:.2f} s",
    ]
    if r["error_count"]:
        lines.append(f"  {r['error_count']} error frames, e.g. {r['errors'][0]}")
    if r["server_log"]:
        lines.append("  server log: " + "\n  ".join(r["server_log"]))
    if r["server_exit_code"] != 0:
        lines.append(f"  server exit code {r['server_exit_code']}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--server", default=default_server(),
                        help="uring-chat binary (env URING_CHAT_BIN, else $CARGO_TARGET_DIR or "
                             "target/release)")
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--behind", type=int, default=100,
                        help="messages posted while the members are away")
    parser.add_argument("--warmup", type=int, default=10,
                        help="messages every member sees before the drop")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="messages/s the poster posts during the storm (0: none)")
    parser.add_argument("--tail", type=float, default=1.0,
                        help="seconds of posting after the last replay completes")
    parser.add_argument("--payload", type=int, default=64, help="bytes of content per message")
    parser.add_argument("--room", default="storm")
    parser.add_argument("--history-messages", type=int, default=None,
                        help="the server's --history-messages (default: the server's, 100)")
    parser.add_argument("--server-args", default="", help="more server flags, one string")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--runs", type=int, default=1, help="runs, each on a fresh server")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()

    out = sys.stderr if args.json else sys.stdout
    results = []
    for run in range(1, args.runs + 1):
        results.append(run_once(args))
        print(summary(run, results[-1]), file=out, flush=True)
    if args.json:
        print(json.dumps({"runs": results, "nproc": os.cpu_count(),
                          "kernel": os.uname().release}))
    if any(r["recovered_gap_free"] < r["members"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
