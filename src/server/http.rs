//! The HTTP port of one core: `/healthz` and `/readyz` for load balancers and orchestrators,
//! `/ws`, where a WebSocket client upgrades and becomes a chat connection of this core, the web
//! chat page that speaks to it (`server/web.rs`), and `/metrics` for Prometheus, unless
//! `--metrics-port` gives it a port of its own (served by the same code, answering `/metrics` alone).
//!
//! Every core listens on the port through `SO_REUSEPORT` and serves it on its own runtime, as it
//! does the chat port: no second runtime, no thread pool. A connection carries one request and is
//! closed after the answer. It counts against the same connection caps as a chat client, and must
//! send its whole request head within `--login-timeout`, or it is shut down (slowloris).
//!
//! With `--tls-cert` both ports speak TLS (https, wss), with the chat port's certificate and its
//! reload: the connection's own task drives the handshake through its io_uring reads
//! ([`TlsStream`]), the deadline covers handshake and head together, and an upgraded connection
//! goes on in the same session. Plain text, a failed handshake and one still unfinished at the
//! deadline are closed and counted as on the chat port.
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
use crate::net::tls::stream::TlsStream;
use crate::net::tls::{TlsFailure, TlsFailureKind, TlsSession};
use crate::net::websocket as handshake;
use crate::net::CloseReason;
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
/// socket (its TLS session, and its place under the caps) to the core as a chat connection.
async fn serve(core: Rc<Core>, stream: TcpStream, peer: SocketAddr, routes: Routes) {
    let admission = core.sockets.admission.clone();
    let (counted_ip, verdict) = admission.admit(peer.ip());
    let admitted = Admitted {
        admission,
        counted_ip,
    };
    let stream = Rc::new(stream);
    let deadline = Deadline::start(&core, &stream);
    let mut wire = match Wire::new(&core, stream) {
        Ok(wire) => wire,
        Err(stream) => {
            core.metrics.tls_closed(CloseReason::TlsFailed);
            let _ = stream.shutdown(Shutdown::Both);
            return deadline.cancel();
        }
    };
    let answer = if verdict.is_err() {
        if matches!(wire, Wire::Tls(_)) {
            // Over TLS a refusal could only be said after a handshake, which a full server does
            // not spend on a client it turns away (the chat port does the same).
            let _ = wire.stream().shutdown(Shutdown::Both);
            return deadline.cancel();
        }
        response(
            503,
            &[],
            "the server holds its maximum of connections\n",
            false,
        )
    } else {
        match read_head(&mut wire).await {
            Ok(Some((Parsed::Head(head), buf))) if head.path == "/ws" && routes.public => {
                match upgrade(&core, &head) {
                    Ok(answer) => {
                        deadline.cancel();
                        let (stream, tls) = wire.into_parts();
                        let Ok(stream) = Rc::try_unwrap(stream) else {
                            unreachable!("only the deadline, now cancelled, held the socket too")
                        };
                        // The connection's own guard releases its place under the caps from now on.
                        std::mem::forget(admitted);
                        let early = buf[head.length..].to_vec();
                        return websocket::adopt(&core, stream, counted_ip, tls, answer, early);
                    }
                    Err(refused) => refused,
                }
            }
            Ok(Some((Parsed::Head(head), _))) => route(&core, &head, routes),
            Ok(Some((Parsed::TooLarge, _))) => {
                response(431, &[], "request head too large\n", false)
            }
            Ok(Some((Parsed::Invalid, _))) => {
                response(400, &[], "not an HTTP/1.1 request\n", false)
            }
            Ok(Some((Parsed::Partial, _)) | None) => {
                if deadline.passed() && wire.is_handshaking() {
                    core.metrics.tls_closed(CloseReason::TlsHandshakeTimeout);
                }
                return deadline.cancel();
            }
            Err(failure) => {
                // Its alert is sent; the close below is as clean as an answer's.
                tracing::debug!(kind = ?failure.kind, error = %failure.error, "TLS failed on the HTTP port");
                core.metrics.tls_closed(match failure.kind {
                    TlsFailureKind::Plaintext => CloseReason::TlsPlaintext,
                    TlsFailureKind::PeerAlert | TlsFailureKind::Protocol => CloseReason::TlsFailed,
                });
                return close(wire.stream(), deadline).await;
            }
        }
    };
    if wire.write_last(answer).await.is_ok() {
        close(wire.stream(), deadline).await;
    } else {
        deadline.cancel();
        let _ = wire.stream().shutdown(Shutdown::Both);
    }
}

/// Ends the exchange after the server's last bytes: FIN, then the client's remaining bytes are
/// read and dropped until it closes too (or the deadline passes), so that no reset destroys what
/// the client has not read yet.
async fn close(stream: &TcpStream, deadline: Deadline) {
    if stream.shutdown(Shutdown::Write).is_ok() {
        linger(stream).await;
    }
    deadline.cancel();
    let _ = stream.shutdown(Shutdown::Both);
}

/// The request's socket: in clear, or through a TLS session when the server has a certificate
/// (boxed: a session is ~1.2 KB).
enum Wire {
    Plain(Rc<TcpStream>),
    Tls(Box<TlsStream>),
}

impl Wire {
    /// The socket back (to be closed) when the TLS session cannot start.
    fn new(core: &Core, stream: Rc<TcpStream>) -> Result<Wire, Rc<TcpStream>> {
        match core.new_tls_session() {
            None => Ok(Wire::Plain(stream)),
            Some(Ok(session)) => Ok(Wire::Tls(Box::new(TlsStream::new(stream, session)))),
            Some(Err(error)) => {
                // Only a configuration rustls rejects gets here; `load` checked it at start.
                tracing::error!(core = core.id(), %error, "cannot start a TLS session");
                Err(stream)
            }
        }
    }

    fn stream(&self) -> &TcpStream {
        match self {
            Wire::Plain(stream) => stream,
            Wire::Tls(tls) => tls.stream(),
        }
    }

    /// Appends what the client sends next to `buf` (in clear, within its capacity); 0 at the end.
    async fn read(&mut self, buf: &mut Vec<u8>) -> Result<usize, TlsFailure> {
        match self {
            Wire::Plain(stream) => {
                let taken = std::mem::take(buf);
                let (len, capacity) = (taken.len(), taken.capacity());
                let (result, slice) = stream.read(taken.slice(len..capacity)).await;
                *buf = slice.into_inner();
                Ok(result.unwrap_or(0))
            }
            Wire::Tls(tls) => tls.read(buf).await,
        }
    }

    /// Sends the answer (sealed, then close_notify, over TLS).
    async fn write_last(&mut self, answer: Vec<u8>) -> std::io::Result<()> {
        match self {
            Wire::Plain(stream) => stream.write_all(answer).await.0,
            Wire::Tls(tls) => tls.write_last(answer).await,
        }
    }

    fn is_handshaking(&self) -> bool {
        matches!(self, Wire::Tls(tls) if tls.is_handshaking())
    }

    /// The socket, and the TLS session the next protocol continues in.
    fn into_parts(self) -> (Rc<TcpStream>, Option<TlsSession>) {
        match self {
            Wire::Plain(stream) => (stream, None),
            Wire::Tls(tls) => {
                let (stream, session) = tls.into_parts();
                (stream, Some(session))
            }
        }
    }
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
/// client closed (or the deadline shut the socket) first. The buffer comes back too: a WebSocket
/// client may have sent its first frames right behind the head.
async fn read_head(wire: &mut Wire) -> Result<Option<(Parsed, Vec<u8>)>, TlsFailure> {
    let mut buf: Vec<u8> = Vec::with_capacity(FIRST_READ_BYTES);
    loop {
        if buf.len() >= buf.capacity() {
            let target = (buf.capacity() * 2).min(MAX_HTTP_HEAD_BYTES);
            buf.reserve_exact(target.saturating_sub(buf.len()));
        }
        if wire.read(&mut buf).await? == 0 {
            return Ok(None);
        }
        match parse_head(&buf, MAX_HTTP_HEAD_BYTES) {
            Parsed::Partial => continue,
            parsed => return Ok(Some((parsed, buf))),
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

/// Shuts the socket down unless the exchange ends (and cancels this) within `--login-timeout`:
/// the TLS handshake, if any, and the request head must arrive by then. The pending read or write
/// then completes, and `serve` ends on its own.
struct Deadline {
    timer: tokio::task::JoinHandle<()>,
    passed: Rc<Cell<bool>>,
}

impl Deadline {
    fn start(core: &Core, stream: &Rc<TcpStream>) -> Deadline {
        let stream = Rc::downgrade(stream);
        let timeout = core.config.login_timeout;
        let passed = Rc::new(Cell::new(false));
        let timer = tokio_uring::spawn({
            let passed = passed.clone();
            async move {
                tokio::time::sleep(timeout).await;
                passed.set(true);
                if let Some(stream) = stream.upgrade() {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
        });
        Deadline { timer, passed }
    }

    /// True once the timeout has shut the socket down.
    fn passed(&self) -> bool {
        self.passed.get()
    }

    fn cancel(self) {
        self.timer.abort();
    }
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
