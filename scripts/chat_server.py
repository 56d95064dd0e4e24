"""What the measuring scripts share: a fresh uring-chat on a free loopback port, and protocol frames.

Imported by recovery-storm.py and room-rss.py (each runs from this folder, so a plain import finds
it). Standard library only.
"""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

HOST = "127.0.0.1"


def default_server():
    """The binary to measure: $URING_CHAT_BIN, else release/uring-chat under $CARGO_TARGET_DIR or target/."""
    if os.environ.get("URING_CHAT_BIN"):
        return os.environ["URING_CHAT_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "target")
    return os.path.normpath(os.path.join(target, "release", "uring-chat"))


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def frame(**fields):
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


class Server:
    """A fresh uring-chat on a free loopback port (`--cores 2 --rate-limit 0`, plus `extra_args`,
    with `env` added to the environment); its output goes to a file, shown if not empty."""

    def __init__(self, binary, extra_args, env=None):
        self.port = free_port()
        self.log = tempfile.TemporaryFile()
        args = [binary, "--host", HOST, "--port", str(self.port), "--http-port", "0", "--cores", "2",
                "--rate-limit", "0", "--log-level", "warn", *extra_args]
        environment = dict(os.environ, **env) if env else None
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=environment)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited with {self.proc.returncode}: {self.output()}")
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the server did not listen on {self.port} within 10 s")
                time.sleep(0.05)

    @property
    def pid(self):
        return self.proc.pid

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace").strip()

    def stop(self):
        """SIGTERM, then SIGKILL after 10 s; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
