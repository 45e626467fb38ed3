//! Reading the server name from the first bytes of a transparently intercepted connection:
//! the SNI of a TLS ClientHello (which may span several records and arrive in any number of
//! reads) or the `Host` header of an HTTP/1 request head. The bytes are guest-controlled, so
//! the parser is bounded ([`MAX_PEEK`]), allocation-light and never panics; it is fuzzed
//! (`fuzz/fuzz_targets/transparent_peek.rs`).

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The most bytes read before a decision (a ClientHello with many extensions, post-quantum
/// key shares included, fits well within this).
pub(crate) const MAX_PEEK: usize = 16 * 1024;
/// Largest TLS plaintext record (RFC 8446 section 5.1).
const MAX_RECORD: usize = 16 * 1024;
const MAX_HEADERS: usize = 100;
const OVER_LIMIT: &str = "client hello or request head over the limit";

/// What the first bytes of a connection turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Peeked {
    /// A complete TLS ClientHello, with its SNI host name when it sent one.
    Tls { sni: Option<String> },
    /// A complete HTTP/1 request head.
    Http(HttpHead),
    /// Neither, or a malformed or oversized one.
    Invalid(&'static str),
}

/// The parts of an HTTP/1 request head the transparent path looks at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HttpHead {
    pub(crate) method: String,
    pub(crate) path: String,
    /// The single `Host` header's value (`None` when absent).
    pub(crate) host: Option<String>,
    pub(crate) headers: HeaderMap,
}

enum Step {
    Done(Peeked),
    /// Not decided yet; parsing again is pointless before the buffer holds this many bytes.
    More(usize),
    /// Not decided yet; parsing again is pointless before another line ends.
    MoreAtNewline,
}

/// Accumulates the first bytes of a connection until they decide what it is.
pub(crate) struct Peeker {
    buf: Vec<u8>,
    max: usize,
    next_parse: usize,
    /// An HTTP head is only parsed again once a line ends, so a head trickling in byte by
    /// byte costs a parse per line, not per byte.
    wait_newline: bool,
    /// Parses so far (the cost the guest can cause).
    parses: usize,
    tls: TlsProgress,
}

impl Peeker {
    pub(crate) fn new(max: usize) -> Peeker {
        Peeker {
            buf: Vec::new(),
            max,
            next_parse: 1,
            wait_newline: false,
            parses: 0,
            tls: TlsProgress::default(),
        }
    }

    /// How many more bytes may be pushed (read at most this many).
    pub(crate) fn room(&self) -> usize {
        self.max.saturating_sub(self.buf.len())
    }

    /// Adds bytes (at most [`Peeker::room`] are kept); returns the decision once there is one.
    pub(crate) fn push(&mut self, data: &[u8]) -> Option<Peeked> {
        let take = data.len().min(self.room());
        self.buf.extend_from_slice(&data[..take]);
        let full = self.buf.len() >= self.max;
        if !full
            && (self.buf.len() < self.next_parse
                || (self.wait_newline && !data[..take].contains(&b'\n')))
        {
            return None;
        }
        self.parses += 1;
        match parse(&self.buf, &mut self.tls) {
            Step::Done(p) => Some(p),
            Step::MoreAtNewline if full => Some(Peeked::Invalid(OVER_LIMIT)),
            Step::MoreAtNewline => {
                self.wait_newline = true;
                None
            }
            Step::More(need) if need > self.max || self.buf.len() >= self.max => {
                Some(Peeked::Invalid(OVER_LIMIT))
            }
            Step::More(need) => {
                self.next_parse = need.max(self.buf.len() + 1);
                None
            }
        }
    }

    /// Everything pushed so far (to be sent upstream first).
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Handshake records consumed so far (records are only consumed whole, so resuming from here
/// gives the same result as starting over).
#[derive(Default)]
struct TlsProgress {
    pos: usize,
    handshake: Vec<u8>,
}

fn parse(buf: &[u8], tls: &mut TlsProgress) -> Step {
    match buf.first() {
        None => Step::More(1),
        Some(0x16) => parse_tls(buf, tls),
        Some(b) if b.is_ascii_uppercase() => parse_http(buf),
        Some(_) => Step::Done(Peeked::Invalid("neither tls nor http")),
    }
}

/// Collects handshake bytes from consecutive handshake records until the first handshake
/// message (which must be a ClientHello) is complete.
fn parse_tls(buf: &[u8], progress: &mut TlsProgress) -> Step {
    loop {
        let pos = progress.pos;
        let Some(header) = buf.get(pos..pos + 5) else {
            return Step::More(pos + 5);
        };
        if header[0] != 0x16 {
            return Step::Done(Peeked::Invalid("tls record is not a handshake"));
        }
        if header[1] != 3 {
            return Step::Done(Peeked::Invalid("not a tls record"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Step::Done(Peeked::Invalid("bad tls record length"));
        }
        let end = pos + 5 + len;
        let Some(body) = buf.get(pos + 5..end) else {
            return Step::More(end);
        };
        progress.handshake.extend_from_slice(body);
        progress.pos = end;
        let handshake = &progress.handshake;
        if handshake.len() < 4 {
            continue;
        }
        if handshake[0] != 1 {
            return Step::Done(Peeked::Invalid(
                "first handshake message is not a client hello",
            ));
        }
        let msg_len = usize::from(handshake[1]) << 16
            | usize::from(handshake[2]) << 8
            | usize::from(handshake[3]);
        if msg_len > MAX_PEEK {
            return Step::Done(Peeked::Invalid("client hello over the limit"));
        }
        if let Some(msg) = handshake.get(4..4 + msg_len) {
            return Step::Done(match client_hello_sni(msg) {
                Ok(sni) => Peeked::Tls { sni },
                Err(why) => Peeked::Invalid(why),
            });
        }
    }
}

/// A bounds-checked big-endian reader.
struct Reader<'a>(&'a [u8]);

const TRUNCATED: &str = "truncated client hello";

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err(TRUNCATED);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<usize, &'static str> {
        Ok(usize::from(self.take(1)?[0]))
    }

    fn u16(&mut self) -> Result<usize, &'static str> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The SNI host name of a ClientHello body (RFC 8446 section 4.1.2, RFC 6066 section 3).
fn client_hello_sni(body: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    let session_id = r.u8()?;
    if session_id > 32 {
        return Err("bad session id");
    }
    r.take(session_id)?;
    let suites = r.u16()?;
    if suites < 2 || suites % 2 != 0 {
        return Err("bad cipher suites");
    }
    r.take(suites)?;
    let compression = r.u8()?;
    if compression < 1 {
        return Err("bad compression methods");
    }
    r.take(compression)?;
    if r.is_empty() {
        return Ok(None);
    }
    let ext_len = r.u16()?;
    let mut exts = Reader(r.take(ext_len)?);
    if !r.is_empty() {
        return Err("bytes after client hello extensions");
    }
    let mut sni = None;
    let mut seen_sni = false;
    while !exts.is_empty() {
        let kind = exts.u16()?;
        let len = exts.u16()?;
        let data = exts.take(len)?;
        if kind == 0 {
            if seen_sni {
                return Err("duplicate server name extension");
            }
            seen_sni = true;
            sni = server_name(data)?;
        }
    }
    Ok(sni)
}

fn server_name(data: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader(data);
    let list_len = r.u16()?;
    let mut list = Reader(r.take(list_len)?);
    if !r.is_empty() || list.is_empty() {
        return Err("bad server name list");
    }
    let mut host = None;
    while !list.is_empty() {
        let kind = list.u8()?;
        let len = list.u16()?;
        let name = list.take(len)?;
        if kind != 0 {
            continue;
        }
        if host.is_some() {
            return Err("duplicate host name in server name list");
        }
        if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
            return Err("bad server name");
        }
        host = Some(String::from_utf8_lossy(name).into_owned());
    }
    Ok(host)
}

/// Parses the head up to the last complete line, so the decision depends only on whole
/// lines (and so not on how the bytes were split into reads).
fn parse_http(buf: &[u8]) -> Step {
    let Some(last_newline) = buf.iter().rposition(|&b| b == b'\n') else {
        return Step::MoreAtNewline;
    };
    let buf = &buf[..=last_newline];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Step::MoreAtNewline,
        Ok(httparse::Status::Complete(_)) => Step::Done(http_head(&req)),
        Err(httparse::Error::TooManyHeaders) => Step::Done(Peeked::Invalid("too many headers")),
        Err(_) => Step::Done(Peeked::Invalid("neither tls nor http")),
    }
}

/// The parts of a complete request head the transparent path checks.
pub(crate) fn http_head(req: &httparse::Request<'_, '_>) -> Peeked {
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Peeked::Invalid("incomplete request line");
    };
    // A client talking to the origin directly sends origin-form; absolute-form would let a
    // second authority disagree with `Host`.
    if !(path.starts_with('/') || (path == "*" && method == "OPTIONS")) {
        return Peeked::Invalid("request target is not origin-form");
    }
    let mut map = HeaderMap::new();
    let mut host = None;
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Peeked::Invalid("invalid header");
        };
        if name == http::header::HOST {
            if host.is_some() {
                return Peeked::Invalid("duplicate host header");
            }
            match value.to_str() {
                Ok(v) => host = Some(v.trim().to_string()),
                Err(_) => return Peeked::Invalid("invalid host header"),
            }
        }
        map.append(name, value);
    }
    Peeked::Http(HttpHead {
        method: method.to_string(),
        path: path.to_string(),
        host,
        headers: map,
    })
}

/// Runs the peeker over `data` pushed in pieces of `step` bytes (0: all at once) and describes
/// the outcome. Not part of the API: the fuzz target and tests compare split and whole reads.
#[doc(hidden)]
pub fn peek_for_fuzzing(data: &[u8], step: usize) -> String {
    let mut p = Peeker::new(MAX_PEEK);
    let step = if step == 0 { data.len().max(1) } else { step };
    for piece in data.chunks(step) {
        if let Some(done) = p.push(piece) {
            return describe(&done);
        }
        if p.room() == 0 {
            break;
        }
    }
    "undecided".into()
}

fn describe(p: &Peeked) -> String {
    match p {
        Peeked::Tls { sni } => format!("tls sni={sni:?}"),
        Peeked::Http(h) => format!(
            "http {} {} host={:?} headers={}",
            h.method,
            h.path,
            h.host,
            h.headers.len()
        ),
        Peeked::Invalid(why) => format!("invalid: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello with the given extensions, in one handshake message.
    fn hello_msg(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        let mut ext_bytes = Vec::new();
        for (kind, data) in exts {
            ext_bytes.extend_from_slice(&kind.to_be_bytes());
            ext_bytes.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext_bytes.extend_from_slice(data);
        }
        body.extend_from_slice(&(ext_bytes.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext_bytes);
        let mut msg = vec![1];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    fn sni_ext(name: &str) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(name.as_bytes());
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        (0, data)
    }

    /// Splits a handshake message into records of at most `size` bytes.
    fn records(msg: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in msg.chunks(size) {
            out.extend_from_slice(&[0x16, 3, 1]);
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    #[test]
    fn sni_from_one_or_many_records_and_any_read_size() {
        let msg = hello_msg(&[(10, vec![0, 2, 0, 29]), sni_ext("Api.Example.com")]);
        for record_size in [msg.len(), 50, 7, 1] {
            let bytes = records(&msg, record_size);
            for step in [0, 1, 3, 100] {
                assert_eq!(
                    peek_for_fuzzing(&bytes, step),
                    "tls sni=Some(\"Api.Example.com\")",
                    "record size {record_size}, step {step}"
                );
            }
        }
        let none = records(&hello_msg(&[(10, vec![0, 2, 0, 29])]), 1000);
        assert_eq!(peek_for_fuzzing(&none, 1), "tls sni=None");
    }

    #[test]
    fn malformed_hellos_are_invalid() {
        let dup = records(&hello_msg(&[sni_ext("a.com"), sni_ext("b.com")]), 1000);
        assert!(peek_for_fuzzing(&dup, 0).starts_with("invalid"));
        let mut msg = hello_msg(&[sni_ext("a.com")]);
        msg.truncate(msg.len() - 2);
        msg[3] -= 2;
        assert!(peek_for_fuzzing(&records(&msg, 1000), 0).starts_with("invalid"));
        // Not a ClientHello; an alert record; an oversized record.
        assert!(peek_for_fuzzing(&records(&[2, 0, 0, 0], 100), 0).starts_with("invalid"));
        assert!(peek_for_fuzzing(&[0x15, 3, 3, 0, 2, 2, 40], 0).starts_with("invalid"));
        assert!(peek_for_fuzzing(&[0x16, 3, 1, 0x40, 1], 0).starts_with("invalid"));
        assert!(peek_for_fuzzing(b"\x00\x01garbage", 0).starts_with("invalid"));
        assert_eq!(peek_for_fuzzing(&[0x16, 3, 1, 0], 1), "undecided");
    }

    #[test]
    fn oversized_input_is_invalid_at_the_limit() {
        let mut head = b"GET / HTTP/1.1\r\nHost: a.com\r\nX: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_PEEK));
        assert!(peek_for_fuzzing(&head, 1000).starts_with("invalid"));
        // A ClientHello announcing more than the limit fails before it arrives.
        let big = [0x16, 3, 1, 0x40, 0, 1, 0x01, 0, 0];
        assert!(peek_for_fuzzing(&big, 0).starts_with("invalid"));
    }

    #[test]
    fn byte_by_byte_input_costs_a_parse_per_line_or_record() {
        let mut head = b"GET /".to_vec();
        head.extend(std::iter::repeat_n(b'a', 8000));
        head.extend_from_slice(b" HTTP/1.1\r\nHost: a.com\r\nX: ");
        head.extend(std::iter::repeat_n(b'b', 8000));
        head.extend_from_slice(b"\r\n\r\n");
        let mut p = Peeker::new(MAX_PEEK);
        let mut done = None;
        for b in &head {
            done = done.or(p.push(&[*b]));
        }
        assert!(matches!(done, Some(Peeked::Http(_))));
        assert!(p.parses <= 6, "{}", p.parses);
        let msg = hello_msg(&[sni_ext("a.com")]);
        let bytes = records(&msg, 1);
        let mut p = Peeker::new(MAX_PEEK);
        for b in &bytes {
            if p.push(&[*b]).is_some() {
                break;
            }
        }
        // One parse per record header and one per record body at most, each resuming where
        // the last one stopped.
        assert!(p.parses <= 2 * msg.len() + 2, "{}", p.parses);
        assert_eq!(p.tls.handshake, msg);
    }

    #[test]
    fn http_heads() {
        let req = b"GET /x?y=1 HTTP/1.1\r\nHost: Example.com:8080\r\nAccept: */*\r\n\r\nbody";
        let whole = peek_for_fuzzing(req, 0);
        assert_eq!(
            whole,
            "http GET /x?y=1 host=Some(\"Example.com:8080\") headers=2"
        );
        assert_eq!(peek_for_fuzzing(req, 1), whole);
        assert_eq!(
            peek_for_fuzzing(b"GET / HTTP/1.0\r\n\r\n", 0),
            "http GET / host=None headers=0"
        );
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
        ] {
            assert!(
                peek_for_fuzzing(bad, 0).starts_with("invalid"),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            peek_for_fuzzing(b"GET / HTTP/1.1\r\nHost: a\r\n", 1),
            "undecided"
        );
    }
}
