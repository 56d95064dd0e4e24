//! Redis pub/sub over RESP, so the same scenarios run against Redis for side-by-side figures.
//!
//! Broadcast: every client SUBSCRIBEs to one channel and senders PUBLISH to it. Direct: each client
//! subscribes to a channel of its own and senders publish to a random client's channel. A connection
//! in subscribe mode cannot PUBLISH (RESP2), so in this mode the senders are extra connections that
//! do not subscribe: a broadcast reaches all N clients (uring-chat: N - 1, the sender excluded).
//! Rooms (`--rooms`): a room is the channel `room-<r>`, each client subscribes to its rooms'
//! channels, and publishers publish into a random one.

/// The channel every client subscribes to for `broadcast`.
pub fn broadcast_channel(run_id: &str) -> String {
    format!("loadgen-{run_id}-all")
}

/// The channel of client `idx` for `direct`.
pub fn client_channel(run_id: &str, idx: usize) -> String {
    format!("loadgen-{run_id}-c{idx}")
}

/// `SUBSCRIBE channel` as a RESP array.
pub fn subscribe(channel: &str) -> Vec<u8> {
    subscribe_all(&[channel.to_string()])
}

/// `UNSUBSCRIBE channel` as a RESP array (churn, `--pattern mixed`).
pub fn unsubscribe(channel: &str) -> Vec<u8> {
    let mut out = b"*2\r\n$11\r\nUNSUBSCRIBE\r\n".to_vec();
    push_bulk(&mut out, channel.as_bytes());
    out
}

/// `SUBSCRIBE ch1 ch2 ...` as one RESP array (Redis confirms each channel separately).
pub fn subscribe_all(channels: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + channels.iter().map(|c| c.len() + 8).sum::<usize>());
    out.push(b'*');
    out.extend_from_slice((channels.len() + 1).to_string().as_bytes());
    out.extend_from_slice(b"\r\n$9\r\nSUBSCRIBE\r\n");
    for c in channels {
        push_bulk(&mut out, c.as_bytes());
    }
    out
}

/// Appends `PUBLISH channel payload` as a RESP array.
pub fn publish(out: &mut Vec<u8>, channel: &[u8], payload: &[u8]) {
    out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
    push_bulk(out, channel);
    push_bulk(out, payload);
}

fn push_bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// One parsed RESP reply, as far as loadgen cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// A pub/sub `message` push: its payload.
    Message(&'a [u8]),
    /// A `subscribe` confirmation.
    Subscribed,
    /// An error reply (`-ERR ...`).
    Error(&'a [u8]),
    /// Anything else (PUBLISH's integer reply, pongs...).
    Other,
}

/// Parses one reply at the start of `buf`. `Ok(None)`: incomplete, read more. `Err`: not RESP.
/// The `message` push, the hot path, is matched by prefix without allocating.
pub fn parse(buf: &[u8]) -> Result<Option<(usize, Reply<'_>)>, String> {
    const MSG: &[u8] = b"*3\r\n$7\r\nmessage\r\n";
    if buf.len() >= MSG.len() && buf.starts_with(MSG) {
        let Some((_, at)) = bulk(buf, MSG.len())? else {
            return Ok(None);
        };
        let Some((payload, end)) = bulk(buf, at)? else {
            return Ok(None);
        };
        return Ok(Some((end, Reply::Message(payload.unwrap_or(b"")))));
    }
    if buf.is_empty() {
        return Ok(None);
    }
    match buf[0] {
        b'*' => {
            let Some((n, mut at)) = line_int(buf, 1)? else {
                return Ok(None);
            };
            let mut first: Option<&[u8]> = None;
            for i in 0..n.max(0) {
                match skip(buf, at)? {
                    None => return Ok(None),
                    Some((s, next)) => {
                        if i == 0 {
                            first = s;
                        }
                        at = next;
                    }
                }
            }
            let reply = match first {
                Some(b"subscribe") => Reply::Subscribed,
                _ => Reply::Other,
            };
            Ok(Some((at, reply)))
        }
        b'-' => match find_crlf(buf, 1) {
            Some(e) => Ok(Some((e + 2, Reply::Error(&buf[1..e])))),
            None => Ok(None),
        },
        _ => match skip(buf, 0)? {
            Some((_, end)) => Ok(Some((end, Reply::Other))),
            None => Ok(None),
        },
    }
}

/// A value's bytes (if a string) and the index after it; `None` when incomplete.
type Parsed<'a> = Result<Option<(Option<&'a [u8]>, usize)>, String>;

/// Skips one non-array value at `at`; returns its bytes if it was a bulk or simple string.
fn skip(buf: &[u8], at: usize) -> Parsed<'_> {
    let Some(&t) = buf.get(at) else {
        return Ok(None);
    };
    match t {
        b'$' => bulk(buf, at),
        b'+' | b'-' | b':' => match find_crlf(buf, at + 1) {
            Some(e) => Ok(Some((Some(&buf[at + 1..e]), e + 2))),
            None => Ok(None),
        },
        other => Err(format!("unexpected RESP type byte {:?}", other as char)),
    }
}

/// A bulk string at `at` (`$len\r\n...\r\n`): its bytes (None for `$-1`) and where it ends.
fn bulk(buf: &[u8], at: usize) -> Parsed<'_> {
    match buf.get(at) {
        None => return Ok(None),
        Some(b'$') => {}
        Some(&b) => return Err(format!("expected bulk string, got {:?}", b as char)),
    }
    let Some((len, start)) = line_int(buf, at + 1)? else {
        return Ok(None);
    };
    if len < 0 {
        return Ok(Some((None, start)));
    }
    let end = start + len as usize;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    Ok(Some((Some(&buf[start..end]), end + 2)))
}

/// An integer ending in CRLF at `at`, and the index after the CRLF.
fn line_int(buf: &[u8], at: usize) -> Result<Option<(i64, usize)>, String> {
    let Some(e) = find_crlf(buf, at) else {
        if buf.len() - at > 24 {
            return Err("RESP length line too long".into());
        }
        return Ok(None);
    };
    let s = std::str::from_utf8(&buf[at..e]).map_err(|_| "bad RESP length".to_string())?;
    let n: i64 = s.parse().map_err(|_| format!("bad RESP length {s:?}"))?;
    Ok(Some((n, e + 2)))
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(p) = memchr::memchr(b'\r', buf.get(i..)?) {
        let at = i + p;
        match buf.get(at + 1) {
            Some(b'\n') => return Some(at),
            Some(_) => i = at + 1,
            None => return None,
        }
    }
    None
}
