#!/usr/bin/env python3
"""An independent probe of direct-message latency: a few pairs of clients, outside loadgen, where one
sends the other a direct message every few milliseconds and the other times its arrival.

Loadgen's own receivers share the CPUs with the server and with each other; during a fan-out of
thousands of frames they read thousands of sockets, and a direct message waits behind them in the
client as well as in the server. This probe holds two threads that are idle almost all the time, so
the kernel runs them at once when a message arrives: what it sees is the server's delay (and the
machine's). Run it beside a loadgen run:

    scripts/dm-probe.py --port 18090 --duration 10 --pairs 4

With --receiver-port the receivers log in on another node of a cluster (docs/CLUSTER.md), so every
message crosses nodes through NATS.

It prints one JSON object: count, lost, and latency percentiles in milliseconds. Standard library
only.
"""
import argparse
import json
import selectors
import socket
import threading
import time

from chat_server import HOST, frame


def login(port, name):
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(frame(type="connect", content=name))
    reader = sock.makefile("rb")
    while True:
        message = json.loads(reader.readline())
        if message["type"] == "connect_response":
            return sock, reader, json.loads(message["content"])["userID"]


def percentile(values, q):
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    parser.add_argument("--interval-ms", type=float, default=2.0, help="between two sends of a pair")
    parser.add_argument("--pairs", type=int, default=4, help="sender/receiver pairs (spread over the cores)")
    parser.add_argument("--receiver-port", type=int, help="receivers log in here (another node); default --port")
    args = parser.parse_args()

    tag = f"probe{int(time.time() * 1000) % 100000}"
    pairs = []
    for i in range(args.pairs):
        sender, _, _ = login(args.port, f"{tag}-s{i}")
        receiver, reader, receiver_id = login(args.receiver_port or args.port, f"{tag}-r{i}")
        receiver.setblocking(False)
        pairs.append((sender, receiver, receiver_id))

    latencies, sent = [], [0]
    done = threading.Event()

    def receive():
        selector = selectors.DefaultSelector()
        pending = {}
        for _, receiver, _ in pairs:
            selector.register(receiver, selectors.EVENT_READ)
            pending[receiver] = b""
        while not (done.is_set() and len(latencies) >= sent[0]):
            events = selector.select(timeout=0.5)
            if not events and done.is_set():
                break
            now = time.perf_counter_ns()
            for key, _ in events:
                data = key.fileobj.recv(1 << 16)
                if not data:
                    return
                lines = (pending[key.fileobj] + data).split(b"\n")
                pending[key.fileobj] = lines.pop()
                for line in lines:
                    if b'"probe:' in line:
                        stamp = int(json.loads(line)["content"].split(":")[1])
                        latencies.append((now - stamp) / 1e6)

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    interval = args.interval_ms / 1000
    start = time.perf_counter()
    tick = 0
    while time.perf_counter() - start < args.duration:
        for sender, _, receiver_id in pairs:
            content = f"probe:{time.perf_counter_ns()}"
            sender.sendall(frame(type="chat", recipientID=receiver_id, content=content))
            sent[0] += 1
        tick += 1
        pause = start + tick * interval - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    done.set()
    thread.join(timeout=5)
    latencies.sort()
    print(json.dumps({
        "count": len(latencies), "lost": sent[0] - len(latencies),
        "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
        "p999_ms": percentile(latencies, 0.999), "max_ms": latencies[-1] if latencies else None,
    }))


if __name__ == "__main__":
    main()
