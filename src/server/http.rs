//! The HTTP port of one core: `/healthz` and `/readyz` for load balancers and orchestrators,
//! `/ws`, where a WebSocket client upgrades and becomes a chat connection of this core, the web
//! chat page that speaks to it (`server/web.rs`), and `/metrics` for Prometheus, unless
//! `--metrics-port` gives it a port of its own (served by the same code, answering `/metrics` alone).
//!
//! Every core listens on the port through `SO_REUSEPORT` and serves it on its own runtime, as it
//! does the chat port: no second runtime, no thread pool. A connection carries one request and is
//! closed after the answer. It counts against the same connection caps as a chat client, and must
//! send its whole request head within `--login-timeout`, or it is shut down (slowloris).
//! `/readyz` answers 503 from the moment the server starts draining, so that a load balancer stops
//! sending new clients while the existing ones are told `SERVER_SHUTDOWN` and flushed; and, on a
//! node of a cluster, while it is cut off from NATS (new logins would get `CLUSTER_UNAVAILABLE`).

use std::cell::Cell;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;

use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::{TcpListener, TcpStream};

use crate::config::MAX_HTTP_HEAD_BYTES;
use crate::metrics::exposition::CONTENT_TYPE as METRICS_TYPE;
use crate::net::guards::Admission;
use crate::net::http::{parse_head, response, Parsed, RequestHead};
use crate::net::websocket as handshake;
use crate::server::core::{accept_until, Core};
use crate::server::web;
use crate::server::websocket;

/// First read buffer of a request; it doubles up to `MAX_HTTP_HEAD_BYTES` for longer heads.
const FIRST_READ_BYTES: usize = 1024;
/// Bytes read and dropped after the answer, waiting for the client's FIN: closing with unread
/// bytes would send a reset that can destroy the answer before the client reads it.
const LINGER_READ_BYTES: usize = 1024;

/// The paths a port answers; the others get 404.
#[derive(Clone, Copy, Debug)]
pub struct Routes {
    /// What the public HTTP port serves: `/healthz`, `/readyz`, `/ws` and the web page.
    pub public: bool,
    pub metrics: bool,
}

/// One core's listener on the HTTP port (or the metrics port) and its accept loop.
pub struct HttpPort {
    listener: Rc<TcpListener>,
    stopped: Rc<Cell<bool>>,
}

impl HttpPort {
    /// Starts accepting; it goes on through the drain, so that `/readyz` can say 503.
    pub fn start(core: Rc<Core>, listener: TcpListener, routes: Routes) -> HttpPort {
        let port = HttpPort {
            listener: Rc::new(listener),
            stopped: Rc::default(),
        };
        let (listener, stopped) = (port.listener.clone(), port.stopped.clone());
        tokio_uring::spawn(accept_loop(core, listener, stopped, routes));
        port
    }

    /// Stops accepting when the core ends. The pending accept must end with an error now: left
    /// armed, tokio-uring would let it take one more connection as the runtime drops, and that
    /// client would wait forever (../shared/notes/tokio-uring.md). The other cores' listeners take
    /// the new connections from here on.
    pub fn stop(self) {
        self.stopped.set(true);
        // SAFETY: shutdown(2) on a listening fd this core owns; no memory is involved.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RD) };
    }
}

async fn accept_loop(
    core: Rc<Core>,
    listener: Rc<TcpListener>,
    stopped: Rc<Cell<bool>>,
    routes: Routes,
) {
    let port = if routes.public { "http" } else { "metrics" };
    accept_until(
        &core,
        &listener,
        port,
        || stopped.get(),
        |stream, peer| {
            tokio_uring::spawn(serve(core.clone(), stream, peer, routes));
        },
    )
    .await;
}

/// Releases a connection's place under the caps when it ends.
struct Admitted {
    admission: Arc<Admission>,
    counted_ip: Option<std::net::IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(self.counted_ip);
    }
}

/// Reads one request head and answers it, then closes; or, for a WebSocket upgrade, hands the
/// socket (and its place under the caps) to the core as a chat connection.
async fn serve(core: Rc<Core>, stream: TcpStream, peer: SocketAddr, routes: Routes) {
    let admission = core.sockets.admission.clone();
    let (counted_ip, verdict) = admission.admit(peer.ip());
    let admitted = Admitted {
        admission,
        counted_ip,
    };
    let stream = Rc::new(stream);
    let timer = shut_down_after_timeout(&core, &stream);
    let answer = if verdict.is_err() {
        response(
            503,
            &[],
            "the server holds its maximum of connections\n",
            false,
        )
    } else {
        match read_head(&stream).await {
            Some((Parsed::Head(head), buf)) if head.path == "/ws" && routes.public => {
                match upgrade(&core, &head) {
                    Ok(answer) => {
                        timer.abort();
                        let Ok(stream) = Rc::try_unwrap(stream) else {
                            unreachable!("only the timer, now aborted, held the socket too")
                        };
                        // The connection's own guard releases its place under the caps from now on.
                        std::mem::forget(admitted);
                        let leftover = &buf[head.length..];
                        return websocket::adopt(&core, stream, counted_ip, answer, leftover);
                    }
                    Err(refused) => refused,
                }
            }
            Some((Parsed::Head(head), _)) => route(&core, &head, routes),
            Some((Parsed::TooLarge, _)) => response(431, &[], "request head too large\n", false),
            Some((Parsed::Invalid, _)) => response(400, &[], "not an HTTP/1.1 request\n", false),
            Some((Parsed::Partial, _)) | None => return timer.abort(),
        }
    };
    let (written, _) = stream.write_all(answer).await;
    if written.is_ok() && stream.shutdown(Shutdown::Write).is_ok() {
        linger(&stream).await;
    }
    timer.abort();
    let _ = stream.shutdown(Shutdown::Both);
}

/// The 101 answer to a valid WebSocket upgrade, or the response that refuses it.
fn upgrade(core: &Core, head: &RequestHead) -> Result<Vec<u8>, Vec<u8>> {
    if head.method != "GET" {
        return Err(response(405, &[("Allow", "GET")], "use GET\n", false));
    }
    if !core.takes_input() {
        return Err(response(503, &[], "draining\n", false));
    }
    handshake::accept(head, &core.config.ws_allowed_origins).map_err(|refusal| {
        let version = [("Sec-WebSocket-Version", "13")];
        let headers: &[(&str, &str)] = if refusal.status == 426 { &version } else { &[] };
        response(refusal.status, headers, refusal.reason, false)
    })
}

/// Reads until the buffer holds a whole head, an oversized one, or garbage; `None` when the
/// client closed (or the timeout shut the socket) first. The buffer comes back too: a WebSocket
/// client may have sent its first frames right behind the head.
async fn read_head(stream: &TcpStream) -> Option<(Parsed, Vec<u8>)> {
    let mut buf: Vec<u8> = Vec::with_capacity(FIRST_READ_BYTES);
    loop {
        if buf.len() == buf.capacity() {
            let target = (buf.capacity() * 2).min(MAX_HTTP_HEAD_BYTES);
            buf.reserve_exact(target - buf.len());
        }
        let (len, capacity) = (buf.len(), buf.capacity());
        let (result, slice) = stream.read(buf.slice(len..capacity)).await;
        buf = slice.into_inner();
        if !matches!(result, Ok(read) if read > 0) {
            return None;
        }
        match parse_head(&buf, MAX_HTTP_HEAD_BYTES) {
            Parsed::Partial => continue,
            parsed => return Some((parsed, buf)),
        }
    }
}

/// The answer to a parsed request: GET (or HEAD) of a path this port serves, 405 for other
/// methods there, 404 elsewhere.
fn route(core: &Core, head: &RequestHead, routes: Routes) -> Vec<u8> {
    let path = head.path.as_str();
    let page = web::asset(path).filter(|_| routes.public);
    let served = match path {
        "/healthz" | "/readyz" => routes.public,
        "/metrics" => routes.metrics,
        _ => page.is_some(),
    };
    if !served {
        return response(404, &[], "not found\n", false);
    }
    let head_only = match head.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => return response(405, &[("Allow", "GET, HEAD")], "use GET\n", false),
    };
    if let Some(asset) = page {
        return web::answer(asset, head_only);
    }
    match path {
        "/healthz" => response(200, &[], "ok\n", head_only),
        "/readyz" if !core.takes_input() => response(503, &[], "draining\n", head_only),
        "/readyz"
            if core
                .shard
                .cluster
                .as_ref()
                .is_some_and(|c| !c.is_connected()) =>
        {
            response(503, &[], "cut off from the cluster (NATS)\n", head_only)
        }
        "/readyz" => response(200, &[], "ready\n", head_only),
        _ => {
            let metrics = core.exposition.encode();
            response(200, &[("Content-Type", METRICS_TYPE)], &metrics, head_only)
        }
    }
}

/// Shuts the socket down unless the exchange ends (and aborts this timer) within
/// `--login-timeout`: the pending read or write then completes, and `serve` ends on its own.
fn shut_down_after_timeout(core: &Core, stream: &Rc<TcpStream>) -> tokio::task::JoinHandle<()> {
    let stream = Rc::downgrade(stream);
    let timeout = core.config.login_timeout;
    tokio_uring::spawn(async move {
        tokio::time::sleep(timeout).await;
        if let Some(stream) = stream.upgrade() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    })
}

/// Reads and drops what the client still sends until it closes (bounded by the timeout).
async fn linger(stream: &TcpStream) {
    let mut buf = vec![0u8; LINGER_READ_BYTES];
    loop {
        let (result, returned) = stream.read(buf).await;
        buf = returned;
        if !matches!(result, Ok(read) if read > 0) {
            return;
        }
    }
}
