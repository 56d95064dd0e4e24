//! Cluster tests' harness (tests/cluster.rs, tests/cluster_faults.rs): a nats-server of their
//! own, and nodes as separate processes of the binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{eventually, Client};

const BINARY: &str = env!("CARGO_BIN_EXE_uring-chat");

/// A nats-server with JetStream, killed when dropped.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    pub store: PathBuf,
}

impl Nats {
    /// A fresh server on a free port, or `None` (and one SKIPPED line) without `nats-server`.
    pub fn start(test: &str) -> Option<Nats> {
        let found = Command::new("nats-server").arg("--version").output();
        if !found.is_ok_and(|output| output.status.success()) {
            println!(
                "SKIPPED: {test}: nats-server is not on PATH (Debian: apt-get install nats-server)"
            );
            return None;
        }
        let port = free_port();
        let store =
            std::env::temp_dir().join(format!("uring-chat-nats-{}-{port}", std::process::id()));
        let mut nats = Nats {
            child: None,
            port,
            store,
        };
        nats.restart();
        Some(nats)
    }

    /// Starts the server (again) on the same port and store dir, and waits until it listens.
    pub fn restart(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        eventually("nats-server listens", || {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// One node: the binary with `--nats`, killed (SIGKILL) when dropped.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    pub http: SocketAddr,
    /// The JSON log lines the node wrote after it listened.
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts a node of `cores` cores named `name`, and waits until it is ready (it reaches NATS).
    pub fn start(nats: &Nats, name: &str, cores: usize) -> Node {
        Node::start_with(nats, name, cores, &[])
    }

    /// [`Node::start`] with more flags (`--rate-limit 0`, ...).
    pub fn start_with(nats: &Nats, name: &str, cores: usize, flags: &[&str]) -> Node {
        let mut child = Command::new(BINARY)
            .args(["--host", "127.0.0.1", "--port", "0", "--http-port", "0"])
            .args(["--cores", &cores.to_string(), "--log-format", "json"])
            .args(["--nats", &nats.url(), "--node-name", name])
            .args(flags)
            .env_remove("RUST_LOG")
            .env_remove("URING_CHAT_PORT")
            .env_remove("URING_CHAT_HTTP_PORT")
            .env_remove("URING_CHAT_NATS")
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap() > 0 {
            let log: Value = serde_json::from_str(&line).expect("JSON log lines");
            if let Some(addr) = log["fields"]["local_addr"].as_str() {
                let http = log["fields"]["http"].as_str().expect("the HTTP port is on");
                let http = http.trim_start_matches("Some(").trim_end_matches(')');
                let log = Arc::new(Mutex::new(Vec::new()));
                let lines = log.clone();
                std::thread::spawn(move || {
                    for line in stderr.lines().map_while(Result::ok) {
                        lines.lock().unwrap().push(line);
                    }
                });
                let node = Node {
                    child,
                    addr: addr.parse().unwrap(),
                    http: http.parse().unwrap(),
                    log,
                };
                eventually("the node reaches NATS", || node.readyz() == 200);
                return node;
            }
            line.clear();
        }
        panic!("the node exited before listening: {:?}", child.wait());
    }

    /// The whole HTTP answer to `GET path`, head included.
    pub fn get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(self.http).unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    /// The status `/readyz` answers.
    pub fn readyz(&self) -> u16 {
        let answer = self.get("/readyz");
        (answer.split(' ').nth(1))
            .and_then(|status| status.parse().ok())
            .unwrap_or(0)
    }

    /// The value of the series `series` (name and labels, as written) in `/metrics`.
    pub fn metric(&self, series: &str) -> u64 {
        let text = self.get("/metrics");
        let line = text
            .lines()
            .find(|line| line.starts_with(&format!("{series} ")));
        let line = line.unwrap_or_else(|| panic!("no {series} in /metrics"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// The log lines so far whose message contains `text`.
    pub fn logged(&self, text: &str) -> Vec<Value> {
        let log = self.log.lock().unwrap();
        let lines = log
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok());
        lines
            .filter(|line: &Value| {
                line["fields"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains(text)
            })
            .collect()
    }

    pub fn login(&self, name: &str) -> Client {
        Client::login(self.addr, name)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
