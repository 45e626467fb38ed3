//! A strict HTTP/1.1 framing guard in front of hyper's server parser.
//!
//! hyper (through httparse) is lenient in ways that matter for a proxy: it accepts bare `LF`
//! line endings, silently drops a `Content-Length` that follows `Transfer-Encoding`, and
//! merges identical duplicate `Content-Length` headers. Each of those is a request-smuggling
//! shape when two parsers disagree. The guard reads the client's bytes first, holds each
//! request head back until it is complete, and checks it strictly: CRLF only, at most one
//! `Content-Length`, never both `Content-Length` and `Transfer-Encoding`, `chunked` as the only
//! transfer coding. It follows the body framing (length or chunked, with strict chunk lines)
//! to find the next head. On a violation it hands hyper a request line that cannot parse, so
//! hyper answers `400 Bad Request` and closes the connection. After a `CONNECT` or an
//! `Upgrade` request the bytes belong to a tunnel and pass through untouched.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What hyper sees after a violation: not a valid request line, so it answers 400.
const POISON: &[u8] = b"\x00 / HTTP/1.1\r\n\r\n";
const MAX_CHUNK_LINE: usize = 1024;
const MAX_TRAILERS: usize = 16 * 1024;
const MAX_HEADERS: usize = 128;

#[derive(Debug)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd(u8),
    Trailers,
    Passthrough,
}

/// Whether the guard stops inspecting after this request: a `CONNECT` or any request with an
/// `Upgrade` header. If such a request is not switched (`200` to CONNECT, `101` to an
/// upgrade), the response must close the connection ([`close_unless_switched`]), or later
/// requests on it would reach hyper unguarded.
pub(crate) fn starts_passthrough<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::CONNECT || req.headers().contains_key(http::header::UPGRADE)
}

/// Adds `Connection: close` to a response that does not switch a passthrough request.
pub(crate) fn close_unless_switched<B>(
    passthrough: bool,
    connect: bool,
    resp: &mut http::Response<B>,
) {
    let switched = if connect {
        resp.status().is_success()
    } else {
        resp.status() == http::StatusCode::SWITCHING_PROTOCOLS
    };
    if passthrough && !switched {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
}

/// An extra check on every complete request head (the transparent path re-checks the
/// destination of each request on a spliced keep-alive connection).
pub(crate) type HeadCheck =
    Box<dyn FnMut(&httparse::Request<'_, '_>) -> Result<(), &'static str> + Send>;

/// Wraps the client side of an HTTP/1.x server connection.
pub(crate) struct H1Guard<T> {
    inner: T,
    check: Option<HeadCheck>,
    /// Fail with a read error instead of handing hyper a poisoned request (nothing parses
    /// the bytes downstream: they are spliced).
    strict: bool,
    /// Set when the guard refuses something (for the spliced path's log record).
    refused: Option<Arc<AtomicBool>>,
    state: State,
    /// Validated bytes waiting for hyper.
    ready: BytesMut,
    /// The head (or chunk line, or trailers) being accumulated.
    line: Vec<u8>,
    max_head: usize,
    failed: bool,
    eof: bool,
}

impl<T> H1Guard<T> {
    pub(crate) fn new(inner: T, max_head: usize) -> Self {
        H1Guard {
            inner,
            check: None,
            strict: false,
            refused: None,
            state: State::Head,
            ready: BytesMut::new(),
            line: Vec::new(),
            max_head,
            failed: false,
            eof: false,
        }
    }

    /// A guard for a spliced connection: every head must also pass `check`, and a violation
    /// ends the stream with an error (the bytes before the offending head are delivered; the
    /// head and anything after it never are).
    /// `refused` is set on the first refusal (a failed check or a framing violation).
    pub(crate) fn strict(
        inner: T,
        max_head: usize,
        check: HeadCheck,
        refused: Arc<AtomicBool>,
    ) -> Self {
        let mut guard = H1Guard::new(inner, max_head);
        guard.check = Some(check);
        guard.strict = true;
        guard.refused = Some(refused);
        guard
    }

    fn fail(&mut self, why: &'static str) {
        tracing::info!(why, "rejecting http/1 request");
        self.line.clear();
        if !self.strict {
            self.ready.extend_from_slice(POISON);
        }
        if let Some(refused) = &self.refused {
            refused.store(true, Ordering::Relaxed);
        }
        self.failed = true;
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.failed {
            match self.state {
                State::Passthrough => {
                    self.ready.extend_from_slice(data);
                    return;
                }
                State::Body(rem) => {
                    let take = (rem.min(data.len() as u64)) as usize;
                    self.ready.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    let left = rem - take as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Body(left)
                    };
                }
                State::ChunkData(rem) => {
                    let take = (rem.min(data.len() as u64)) as usize;
                    self.ready.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    let left = rem - take as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd(0)
                    } else {
                        State::ChunkData(left)
                    };
                }
                State::ChunkEnd(seen) => {
                    let want = if seen == 0 { b'\r' } else { b'\n' };
                    if data[0] != want {
                        return self.fail("chunk data not followed by crlf");
                    }
                    self.ready.extend_from_slice(&data[..1]);
                    data = &data[1..];
                    self.state = if seen == 0 {
                        State::ChunkEnd(1)
                    } else {
                        State::ChunkSize
                    };
                }
                State::Head | State::ChunkSize | State::Trailers => {
                    let b = data[0];
                    data = &data[1..];
                    if b == b'\n' && self.line.last() != Some(&b'\r') {
                        return self.fail("bare lf");
                    }
                    if b == b'\r' && self.line.last() == Some(&b'\r') {
                        return self.fail("bare cr");
                    }
                    self.line.push(b);
                    self.on_line_byte();
                }
            }
        }
    }

    fn on_line_byte(&mut self) {
        match self.state {
            State::Head => {
                if self.line.len() > self.max_head {
                    return self.fail("request head too large");
                }
                if self.line == b"\r\n" {
                    // An empty line before a request line is tolerated by RFC 9112; drop it.
                    self.line.clear();
                } else if self.line.ends_with(b"\r\n\r\n") {
                    self.finish_head();
                }
            }
            State::ChunkSize => {
                if self.line.len() > MAX_CHUNK_LINE {
                    return self.fail("chunk line too long");
                }
                if self.line.ends_with(b"\r\n") {
                    let line = std::mem::take(&mut self.line);
                    let text = &line[..line.len() - 2];
                    let size_part = match text.iter().position(|&b| b == b';') {
                        Some(i) => &text[..i],
                        None => text,
                    };
                    let size = std::str::from_utf8(size_part)
                        .ok()
                        .filter(|s| {
                            !s.is_empty()
                                && s.len() <= 16
                                && s.bytes().all(|b| b.is_ascii_hexdigit())
                        })
                        .and_then(|s| u64::from_str_radix(s, 16).ok());
                    let Some(size) = size else {
                        return self.fail("invalid chunk size");
                    };
                    if text[size_part.len()..]
                        .iter()
                        .any(|&b| b == b'\r' || b == b'\n')
                    {
                        return self.fail("invalid chunk extension");
                    }
                    self.ready.extend_from_slice(&line);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                }
            }
            State::Trailers => {
                if self.line.len() > MAX_TRAILERS {
                    return self.fail("trailers too large");
                }
                if self.line == b"\r\n" || self.line.ends_with(b"\r\n\r\n") {
                    let line = std::mem::take(&mut self.line);
                    self.ready.extend_from_slice(&line);
                    self.state = State::Head;
                }
            }
            _ => {}
        }
    }

    fn finish_head(&mut self) {
        let head = std::mem::take(&mut self.line);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            _ => return self.fail("unparsable request head"),
        }
        let mut content_length: Option<u64> = None;
        let mut cl_count = 0;
        let mut te: Option<Vec<u8>> = None;
        let mut upgrade = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                cl_count += 1;
                let v = std::str::from_utf8(h.value).ok().map(str::trim);
                let parsed = v
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok());
                match parsed {
                    Some(n) => content_length = Some(n),
                    None => return self.fail("invalid content-length"),
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                if te.is_some() {
                    return self.fail("duplicate transfer-encoding");
                }
                te = Some(h.value.to_vec());
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        if cl_count > 1 {
            return self.fail("duplicate content-length");
        }
        if cl_count > 0 && te.is_some() {
            return self.fail("content-length with transfer-encoding");
        }
        if let Some(te) = &te {
            if !te.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return self.fail("unsupported transfer-encoding");
            }
        }
        let verdict = self.check.as_mut().map(|check| check(&req));
        if let Some(Err(why)) = verdict {
            return self.fail(why);
        }
        let connect = req.method == Some("CONNECT");
        self.ready.extend_from_slice(&head);
        self.state = if connect || upgrade {
            State::Passthrough
        } else if te.is_some() {
            State::ChunkSize
        } else {
            match content_length {
                Some(n) if n > 0 => State::Body(n),
                _ => State::Head,
            }
        };
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for H1Guard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.ready.is_empty() {
                let n = self.ready.len().min(buf.remaining());
                buf.put_slice(&self.ready[..n]);
                self.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.failed && self.strict {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request refused",
                )));
            }
            if self.failed || self.eof {
                return Poll::Ready(Ok(()));
            }
            if matches!(self.state, State::Passthrough) {
                return Pin::new(&mut self.inner).poll_read(cx, buf);
            }
            let mut tmp = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        // EOF: hand over a partial head as is; hyper reports it incomplete.
                        self.eof = true;
                        let rest = std::mem::take(&mut self.line);
                        // A spliced connection never forwards an unchecked partial head.
                        if !(self.strict && matches!(self.state, State::Head)) {
                            self.ready.extend_from_slice(&rest);
                        }
                    } else {
                        self.feed(&tmp[..n]);
                    }
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for H1Guard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (Vec<u8>, bool) {
        let mut g = H1Guard::new((), 64 * 1024);
        g.feed(input);
        (g.ready.to_vec(), g.failed)
    }

    #[test]
    fn clean_requests_pass_unchanged() {
        let input = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(run(input), (input.to_vec(), false));
        let chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(run(chunked), (chunked.to_vec(), false));
    }

    #[test]
    fn smuggling_shapes_fail() {
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\n\n",
            b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
        ] {
            let (out, failed) = run(bad);
            assert!(failed, "{:?}", String::from_utf8_lossy(bad));
            assert!(out.ends_with(POISON));
        }
    }

    #[test]
    fn split_reads_give_the_same_result() {
        let input: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nxyGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 1..input.len() {
            let mut g = H1Guard::new((), 64 * 1024);
            g.feed(&input[..cut]);
            g.feed(&input[cut..]);
            assert!(!g.failed, "cut at {cut}");
            assert_eq!(&g.ready[..], input, "cut at {cut}");
        }
        let bad: &[u8] = b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n";
        for cut in 1..bad.len() {
            let mut g = H1Guard::new((), 64 * 1024);
            g.feed(&bad[..cut]);
            g.feed(&bad[cut..]);
            assert!(g.failed, "cut at {cut}");
        }
    }

    #[test]
    fn strict_guards_check_every_head_and_stop_at_the_first_refusal() {
        let check: HeadCheck = Box::new(|req| {
            let host = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .map(|h| h.value);
            if host == Some(&b"ok"[..]) {
                Ok(())
            } else {
                Err("other host")
            }
        });
        let refused = Arc::new(AtomicBool::new(false));
        let mut g = H1Guard::strict((), 64 * 1024, check, refused.clone());
        let first = b"POST / HTTP/1.1\r\nHost: ok\r\nContent-Length: 5\r\n\r\nHost:";
        g.feed(first);
        g.feed(b"GET / HTTP/1.1\r\nHost: no\r\n\r\nGET / HTTP/1.1\r\nHost: ok\r\n\r\n");
        assert!(g.failed && refused.load(Ordering::Relaxed));
        // The body that merely looks like a header went through; nothing after the refusal.
        assert_eq!(&g.ready[..], &first[..]);
    }

    #[tokio::test]
    async fn strict_guards_end_with_an_error_and_drop_partial_heads() {
        use tokio::io::AsyncReadExt;
        let input: &[u8] = b"GET / HTTP/1.1\r\nHost: no\r\n\r\n";
        let mut g = H1Guard::strict(input, 1024, Box::new(|_| Err("refused")), Arc::default());
        let mut out = Vec::new();
        assert!(g.read_to_end(&mut out).await.is_err());
        assert!(out.is_empty());
        let partial: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n";
        let mut g = H1Guard::strict(partial, 1024, Box::new(|_| Ok(())), Arc::default());
        g.read_to_end(&mut out).await.unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn connect_switches_to_passthrough() {
        let input = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n\x16\x03\x01\nraw\n";
        assert_eq!(run(input), (input.to_vec(), false));
    }
}
