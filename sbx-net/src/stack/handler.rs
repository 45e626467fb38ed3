//! The seam between the network stack and the egress proxy: what the stack hands its flows,
//! DNS questions and dropped packets to.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// A boxed, sendable future (the handler trait is object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The outcome of a guest's DNS question, as decided by the policy and the host resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestAnswer {
    /// The policy does not allow the name: answer NXDOMAIN (the name was not resolved).
    Denied,
    /// The name's addresses.
    Answer(Vec<IpAddr>),
    /// The name does not exist.
    NotFound,
    /// The lookup failed: answer SERVFAIL.
    Failed,
}

/// Where the stack sends what the guest does. [`crate::Proxy`] implements it; tests and
/// embedders can plug in their own.
///
/// Every method is called from inside the stack's tokio runtime; the futures are awaited in a
/// task per flow (or per DNS question), so they may take as long as the flow lasts.
pub trait FlowHandler: Send + Sync + 'static {
    /// A TCP connection to the gateway's proxy port: the explicit proxy protocol.
    fn serve_connection(&self, io: FlowStream, peer: SocketAddr) -> BoxFuture<'_, ()>;

    /// A TCP connection to port 80 or 443 of another address. `names` are the names the
    /// guest resolved to that address through the gateway DNS (empty when none).
    fn serve_transparent(
        &self,
        io: FlowStream,
        original_dst: SocketAddr,
        names: Vec<String>,
    ) -> BoxFuture<'_, ()>;

    /// A TCP connection to any other port of another address.
    fn serve_network(&self, io: FlowStream, original_dst: SocketAddr) -> BoxFuture<'_, ()>;

    /// A DNS question for `name` (lowercase, no trailing dot) from the guest.
    fn resolve_for_guest(&self, name: String) -> BoxFuture<'_, GuestAnswer>;

    /// Records something the stack dropped itself (UDP, ICMP, IPv6, other protocols, TCP to
    /// a closed gateway port, the flow cap). Implementations rate-limit; the stack calls this
    /// for every dropped packet or refused connection.
    fn log_blocked_network(&self, dropped: &Dropped);
}

/// The protocol of something the stack dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DroppedProtocol {
    /// A TCP connection attempt.
    Tcp,
    /// UDP other than the gateway DNS.
    Udp,
    /// ICMP.
    Icmp,
    /// Any IPv6 packet (the guest network is IPv4 only).
    Ipv6,
    /// Another IPv4 protocol, by number.
    Ip(u8),
    /// A frame that is neither IPv4 nor ARP, by ethertype.
    Ethernet(u16),
}

/// Why the stack dropped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The protocol is not carried at all (or the packet is a fragment).
    NotCarried,
    /// TCP to a gateway port nothing serves.
    ClosedGatewayPort,
    /// The cap on concurrent flows was reached.
    FlowLimit,
}

/// Something the stack dropped itself, for [`FlowHandler::log_blocked_network`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dropped {
    /// The protocol.
    pub protocol: DroppedProtocol,
    /// Where it was going (`0.0.0.0:0` for non-IP frames; port 0 when the protocol has none).
    pub dst: SocketAddr,
    /// Why it was dropped.
    pub reason: DropReason,
}

/// One TCP flow of the guest as a byte stream: reads return what the guest sent, writes go
/// to the guest, shutting down the write side sends the guest a FIN. Dropping it closes
/// the guest's connection once what was written is delivered.
#[derive(Debug)]
pub struct FlowStream {
    inner: DuplexStream,
    peer: SocketAddr,
    dst: SocketAddr,
}

impl FlowStream {
    pub(crate) fn new(inner: DuplexStream, peer: SocketAddr, dst: SocketAddr) -> Self {
        FlowStream { inner, peer, dst }
    }

    /// The guest's end of the connection.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The address the guest connected to (before any address translation).
    pub fn guest_dst(&self) -> SocketAddr {
        self.dst
    }
}

impl AsyncRead for FlowStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FlowStream {
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
