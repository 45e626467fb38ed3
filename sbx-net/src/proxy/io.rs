//! Byte counting, idle tracking, body wrappers and small response helpers.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::log::{LogRecord, PolicyLog};
use crate::policy::Reason;

/// Errors inside bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type used on both legs.
pub(crate) type ProxyBody = BoxBody<Bytes, BoxError>;

/// Last-activity clock shared by both directions of a connection.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Resolves once `activity` has been idle for `limit`.
pub(crate) async fn idle_expired(activity: &Activity, limit: Duration) {
    loop {
        let idle = activity.idle_for();
        if idle >= limit {
            return;
        }
        tokio::time::sleep(limit - idle).await;
    }
}

/// An I/O wrapper that counts bytes read and written and records activity.
pub(crate) struct CountingIo<T> {
    inner: T,
    pub(crate) read: Arc<AtomicU64>,
    pub(crate) written: Arc<AtomicU64>,
    activity: Arc<Activity>,
}

impl<T> CountingIo<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> Self {
        CountingIo {
            inner,
            read: Arc::default(),
            written: Arc::default(),
            activity,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read.fetch_add(n as u64, Ordering::Relaxed);
            self.activity.touch();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            if n > 0 {
                self.written.fetch_add(n as u64, Ordering::Relaxed);
                self.activity.touch();
            }
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream whose first reads return bytes already taken from it (the peeked bytes of a
/// transparent connection), so they pass through the same checks as the rest.
pub(crate) struct Prefixed<T> {
    prefix: Vec<u8>,
    pos: usize,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(crate) fn new(prefix: Vec<u8>, inner: T) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
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
}

/// Copies both ways until both sides finish or the pair is idle for `idle`. Returns the bytes
/// copied (a to b, b to a).
pub(crate) async fn splice<A, B>(a: A, b: B, idle: Duration) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut a = CountingIo::new(a, activity.clone());
    let mut b = CountingIo::new(b, activity.clone());
    let (a_read, b_read) = (a.read.clone(), b.read.clone());
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
        _ = idle_expired(&activity, idle) => {
            tracing::debug!("tunnel idle timeout");
        }
    }
    (
        a_read.load(Ordering::Relaxed),
        b_read.load(Ordering::Relaxed),
    )
}

/// A body that counts the bytes passing through it.
pub(crate) struct CountingBody<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

impl<B> CountingBody<B> {
    pub(crate) fn new(inner: B, count: Arc<AtomicU64>) -> Self {
        CountingBody { inner, count }
    }
}

impl<B> Body for CountingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Emits a log record once, when dropped, with the byte counts seen by then.
pub(crate) struct RecordOnDrop {
    record: Mutex<Option<LogRecord>>,
    log: Arc<dyn PolicyLog>,
    pub(crate) up: Arc<AtomicU64>,
    pub(crate) down: Arc<AtomicU64>,
}

impl RecordOnDrop {
    pub(crate) fn new(record: LogRecord, log: Arc<dyn PolicyLog>) -> Arc<RecordOnDrop> {
        Arc::new(RecordOnDrop {
            record: Mutex::new(Some(record)),
            log,
            up: Arc::default(),
            down: Arc::default(),
        })
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut LogRecord)) {
        if let Ok(mut r) = self.record.lock() {
            if let Some(r) = r.as_mut() {
                f(r);
            }
        }
    }
}

impl Drop for RecordOnDrop {
    fn drop(&mut self) {
        let rec = self.record.get_mut().ok().and_then(|r| r.take());
        if let Some(mut rec) = rec {
            rec.bytes_up = self.up.load(Ordering::Relaxed);
            rec.bytes_down = self.down.load(Ordering::Relaxed);
            self.log.record(&rec);
        }
    }
}

/// A response body that keeps the request's log record alive until the body is done.
pub(crate) struct LoggedBody {
    inner: CountingBody<ProxyBody>,
    _record: Arc<RecordOnDrop>,
}

impl LoggedBody {
    pub(crate) fn new(inner: ProxyBody, record: Arc<RecordOnDrop>) -> Self {
        LoggedBody {
            inner: CountingBody::new(inner, record.down.clone()),
            _record: record,
        }
    }
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A small plain-text response generated by the proxy, carrying the reason in
/// `x-sbx-reason` so clients and tests can tell proxy refusals from upstream answers.
pub(crate) fn refusal(status: StatusCode, reason: Reason) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("sbx proxy: {reason}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        "x-sbx-reason",
        http::HeaderValue::from_static(reason.as_str()),
    );
    resp
}

/// An empty body.
pub(crate) fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}
