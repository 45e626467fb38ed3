//! The stack task: reads frames, feeds smoltcp, opens a flow per SYN, answers DNS, and moves
//! flow bytes between smoltcp sockets and proxy tasks.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, PollIngressSingleResult, SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Sleep;

use super::classify::{classify, Action};
use super::config::StackConfig;
use super::device::{Counters, Link};
use super::dns::{DnsError, DnsQuery, DnsRcode, QTYPE_A};
use super::flow::{Flow, Outcome, ReadySet};
use super::handler::{DropReason, Dropped, DroppedProtocol, FlowHandler, FlowStream, GuestAnswer};
use super::names::NameTable;
use crate::error::Result;

/// Frames read per round before smoltcp's egress runs (bounded work per wakeup).
const RX_BATCH: usize = 256;
/// Rounds per task poll before yielding to other tasks.
const MAX_ROUNDS: usize = 64;
/// How often flows are checked for timeouts.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The userspace network stack serving one guest.
#[derive(Debug)]
pub struct NetStack;

impl NetStack {
    /// Starts serving the guest behind `frame_fd` (a TAP fd or a `SOCK_SEQPACKET`/`SOCK_DGRAM`
    /// socket: one read is one Ethernet frame) on the current tokio runtime. Flows, DNS
    /// questions and dropped packets go to `handler` (normally a [`crate::Proxy`]).
    ///
    /// The stack runs until the handle is dropped or the fd reports end of file.
    pub fn spawn(
        config: StackConfig,
        frame_fd: OwnedFd,
        handler: Arc<dyn FlowHandler>,
    ) -> Result<NetStackHandle> {
        let counters = Arc::new(Counters::default());
        let link = Link::new(frame_fd, config.mtu, counters.clone())?;
        let engine = Engine::new(config, link, handler, counters.clone());
        let task = tokio::spawn(engine.run());
        Ok(NetStackHandle { task, counters })
    }
}

/// A running stack. Dropping it stops the stack and closes every guest connection.
#[derive(Debug)]
pub struct NetStackHandle {
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

/// Counters of a running stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StackStats {
    /// Frames read from the guest.
    pub frames_in: u64,
    /// Frames written to the guest.
    pub frames_out: u64,
    /// Frames dropped and logged as blocked.
    pub frames_blocked: u64,
    /// Frames dropped for other reasons (malformed, write errors).
    pub frames_dropped: u64,
    /// TCP flows opened (handshake completed).
    pub flows_opened: u64,
    /// TCP connection attempts refused (closed gateway port, flow cap).
    pub flows_refused: u64,
    /// TCP flows currently open or opening.
    pub flows_active: u64,
    /// DNS queries answered or in progress.
    pub dns_queries: u64,
}

impl NetStackHandle {
    /// A snapshot of the counters.
    pub fn stats(&self) -> StackStats {
        let c = &self.counters;
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        StackStats {
            frames_in: l(&c.frames_in),
            frames_out: l(&c.frames_out),
            frames_blocked: l(&c.frames_blocked),
            frames_dropped: l(&c.frames_dropped),
            flows_opened: l(&c.flows_opened),
            flows_refused: l(&c.flows_refused),
            flows_active: l(&c.flows_active),
            dns_queries: l(&c.dns_queries),
        }
    }

    /// Whether the stack stopped (the fd reported end of file or an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for NetStackHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A finished DNS lookup on its way back to the stack task.
struct DnsDone {
    packet: Vec<u8>,
    to: smoltcp::wire::IpEndpoint,
    answer: GuestAnswer,
}

struct Engine {
    cfg: StackConfig,
    link: Link,
    iface: Interface,
    sockets: SocketSet<'static>,
    dns_socket: SocketHandle,
    handler: Arc<dyn FlowHandler>,
    counters: Arc<Counters>,
    flows: Vec<Option<Flow>>,
    free: Vec<usize>,
    live: usize,
    by_tuple: HashMap<(SocketAddrV4, SocketAddrV4), usize>,
    ready: Arc<ReadySet>,
    ready_ids: Vec<usize>,
    names: NameTable,
    dns_tx: mpsc::UnboundedSender<DnsDone>,
    dns_rx: mpsc::UnboundedReceiver<DnsDone>,
    dns_inflight: usize,
    timer: Pin<Box<Sleep>>,
    epoch: Instant,
    next_sweep: Instant,
}

impl Engine {
    fn new(
        cfg: StackConfig,
        mut link: Link,
        handler: Arc<dyn FlowHandler>,
        counters: Arc<Counters>,
    ) -> Engine {
        let epoch = Instant::now();
        let mut ic = Config::new(HardwareAddress::Ethernet(EthernetAddress(cfg.gateway_mac)));
        ic.random_seed = random_seed();
        let mut iface = Interface::new(ic, &mut link, smol_now(epoch));
        iface.update_ip_addrs(|addrs| {
            // Capacity is at least one address; the push cannot fail on an empty list.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(cfg.gateway), cfg.prefix_len));
        });
        // Terminate TCP for every destination: a socket listens on whatever address the
        // guest's SYN names.
        iface.set_any_ip(true);
        let mut sockets = SocketSet::new(Vec::new());
        let udp_rx =
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 128], vec![0u8; 128 * 512]);
        let udp_tx =
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 128], vec![0u8; 128 * 512]);
        let mut dns = udp::Socket::new(udp_rx, udp_tx);
        // Binding a fresh socket to a non-zero port cannot fail.
        let _ = dns.bind(IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(cfg.gateway)),
            port: cfg.dns_port,
        });
        let dns_socket = sockets.add(dns);
        let (dns_tx, dns_rx) = mpsc::unbounded_channel();
        Engine {
            cfg,
            link,
            iface,
            sockets,
            dns_socket,
            handler,
            counters,
            flows: Vec::new(),
            free: Vec::new(),
            live: 0,
            by_tuple: HashMap::new(),
            ready: Arc::new(ReadySet::default()),
            ready_ids: Vec::new(),
            names: NameTable::default(),
            dns_tx,
            dns_rx,
            dns_inflight: 0,
            timer: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            epoch,
            next_sweep: epoch + SWEEP_EVERY,
        }
    }

    async fn run(mut self) {
        let r = poll_fn(|cx| self.poll(cx)).await;
        match r {
            Ok(()) => tracing::debug!("network stack: frame fd closed"),
            Err(e) => tracing::warn!(error = %e, "network stack stopped"),
        }
    }

    /// One wakeup: rounds of (read frames, service flows, DNS, egress) until nothing moves,
    /// then arm the timer. `Ready` only when the fd is done.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ready.set_main(cx.waker());
        for _ in 0..MAX_ROUNDS {
            let mut progress = false;
            match self.ingress(cx) {
                Ok(p) => progress |= p,
                Err(e) => {
                    return Poll::Ready(if e.kind() == io::ErrorKind::UnexpectedEof {
                        Ok(())
                    } else {
                        Err(e)
                    })
                }
            }
            progress |= self.service_ready(cx);
            progress |= self.dns(cx);
            progress |= self.egress();
            if let Poll::Ready(Err(e)) = self.link.poll_flush(cx) {
                return Poll::Ready(Err(e));
            }
            if !progress {
                self.arm_timer(cx);
                return Poll::Pending;
            }
        }
        // Still busy: let other tasks (the proxy tasks feeding us) run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn now(&self) -> smoltcp::time::Instant {
        smol_now(self.epoch)
    }

    /// Reads up to a batch of frames and feeds them to smoltcp one by one.
    fn ingress(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let mut progress = false;
        for _ in 0..RX_BATCH {
            let len = match self.link.poll_read_frame(cx) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            };
            progress = true;
            let action = classify(self.link.frame(len), &self.cfg);
            match action {
                Action::Drop => {
                    Counters::bump(&self.counters.frames_dropped);
                }
                Action::Block(dropped) => {
                    Counters::bump(&self.counters.frames_blocked);
                    self.handler.log_blocked_network(&dropped);
                }
                Action::Stack => self.feed(len),
                Action::Syn { src, dst } => self.syn(len, src, dst),
            }
        }
        Ok(progress)
    }

    fn feed(&mut self, len: usize) {
        self.link.stage(len);
        let now = self.now();
        let _: PollIngressSingleResult =
            self.iface
                .poll_ingress_single(now, &mut self.link, &mut self.sockets);
    }

    /// A SYN: open a listening socket for its exact destination unless a flow already has
    /// the 4-tuple (a retransmitted SYN), the port is a closed gateway port, or the flow cap
    /// is reached (then smoltcp answers with a reset).
    fn syn(&mut self, len: usize, src: SocketAddrV4, dst: SocketAddrV4) {
        if self.by_tuple.contains_key(&(src, dst)) {
            return self.feed(len);
        }
        let refuse = if *dst.ip() == self.cfg.gateway && dst.port() != self.cfg.proxy_port {
            Some(DropReason::ClosedGatewayPort)
        } else if self.live >= self.cfg.max_flows {
            Some(DropReason::FlowLimit)
        } else {
            None
        };
        if let Some(reason) = refuse {
            Counters::bump(&self.counters.flows_refused);
            self.handler.log_blocked_network(&Dropped {
                protocol: DroppedProtocol::Tcp,
                dst: SocketAddr::V4(dst),
                reason,
            });
            return self.feed(len);
        }
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; self.cfg.tcp_rx_buffer]),
            tcp::SocketBuffer::new(vec![0u8; self.cfg.tcp_tx_buffer]),
        );
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        sock.set_timeout(Some(smoltcp::time::Duration::from_millis(
            self.cfg.retransmit_timeout.as_millis() as u64,
        )));
        if sock.listen(IpListenEndpoint::from(dst)).is_err() {
            return self.feed(len);
        }
        let handle = self.sockets.add(sock);
        let id = self.free.pop().unwrap_or_else(|| {
            self.flows.push(None);
            self.flows.len() - 1
        });
        let flow = Flow::new(id, handle, src, dst, self.ready.clone(), Instant::now());
        self.flows[id] = Some(flow);
        self.live += 1;
        self.counters
            .flows_active
            .store(self.live as u64, Ordering::Relaxed);
        self.by_tuple.insert((src, dst), id);
        self.feed(len);
        let sock = self.sockets.get_mut::<tcp::Socket<'_>>(handle);
        if sock.state() == tcp::State::Listen {
            // smoltcp did not take the SYN (bad checksum, odd options): nothing pending.
            self.remove(id);
        } else if let Some(f) = self.flows[id].as_ref() {
            f.arm(sock);
        }
    }

    fn remove(&mut self, id: usize) {
        let Some(flow) = self.flows.get_mut(id).and_then(Option::take) else {
            return;
        };
        self.sockets.remove(flow.handle);
        self.by_tuple.remove(&(flow.peer, flow.dst));
        self.free.push(id);
        self.live -= 1;
        self.counters
            .flows_active
            .store(self.live as u64, Ordering::Relaxed);
    }

    /// Services every flow whose waker fired, and sweeps timeouts once a second.
    fn service_ready(&mut self, _cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut ids = std::mem::take(&mut self.ready_ids);
        self.ready.take(&mut ids);
        let now = Instant::now();
        for &id in &ids {
            progress |= self.service(id, now);
        }
        self.ready_ids = ids;
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            self.sweep(now);
        }
        progress
    }

    fn service(&mut self, id: usize, now: Instant) -> bool {
        let Some(flow) = self.flows.get_mut(id).and_then(Option::as_mut) else {
            return false;
        };
        let sock = self.sockets.get_mut::<tcp::Socket<'_>>(flow.handle);
        let (moved, outcome) = flow.service(sock, now);
        match outcome {
            Outcome::Keep => moved,
            Outcome::Remove => {
                self.remove(id);
                true
            }
            Outcome::Established => {
                self.open(id);
                // Move whatever the guest already sent.
                self.service(id, now);
                true
            }
        }
    }

    /// The handshake completed: start the proxy task for the flow.
    fn open(&mut self, id: usize) {
        let Some(flow) = self.flows.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        Counters::bump(&self.counters.flows_opened);
        let (ours, theirs) = tokio::io::duplex(self.cfg.pipe_buffer);
        flow.attach(ours);
        let peer = SocketAddr::V4(flow.peer);
        let guest_dst = SocketAddr::V4(flow.dst);
        let io = FlowStream::new(theirs, peer, guest_dst);
        let handler = self.handler.clone();
        let dst_ip = *flow.dst.ip();
        let port = flow.dst.port();
        if dst_ip == self.cfg.gateway && port == self.cfg.proxy_port {
            tokio::spawn(async move { handler.serve_connection(io, peer).await });
            return;
        }
        let real = SocketAddr::new(self.names.real_address(dst_ip), port);
        if port == 80 || port == 443 {
            let names = self.names.names(IpAddr::V4(dst_ip), Instant::now());
            tokio::spawn(async move { handler.serve_transparent(io, real, names).await });
        } else {
            tokio::spawn(async move { handler.serve_network(io, real).await });
        }
    }

    /// Drops flows stuck opening or closing.
    fn sweep(&mut self, now: Instant) {
        let mut dead = Vec::new();
        for (id, f) in self.flows.iter().enumerate() {
            let Some(f) = f else { continue };
            let stuck_opening = f.phase == super::flow::Phase::Opening
                && now.duration_since(f.created) > self.cfg.handshake_timeout;
            let stuck_closing = f.closing_since.is_some()
                && now.duration_since(f.last_active) > self.cfg.close_timeout;
            if stuck_opening || stuck_closing {
                dead.push(id);
            }
        }
        for id in dead {
            if let Some(f) = self.flows[id].as_ref() {
                self.sockets.get_mut::<tcp::Socket<'_>>(f.handle).abort();
            }
            // Let smoltcp send the reset, then the flow goes on its next service.
            self.egress();
            self.remove(id);
        }
    }

    /// Reads DNS questions from the gateway's UDP socket and answers finished lookups.
    fn dns(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while let Poll::Ready(Some(done)) = self.dns_rx.poll_recv(cx) {
            self.dns_inflight -= 1;
            self.answer(done);
            progress = true;
        }
        loop {
            let sock = self.sockets.get_mut::<udp::Socket<'_>>(self.dns_socket);
            let (packet, from) = match sock.recv() {
                Ok((p, meta)) => (p.to_vec(), meta.endpoint),
                Err(_) => break,
            };
            progress = true;
            Counters::bump(&self.counters.dns_queries);
            let reply = match DnsQuery::parse(&packet) {
                Ok(q) if q.qtype == QTYPE_A => {
                    if self.dns_inflight >= self.cfg.max_dns_lookups {
                        tracing::debug!("dns lookups at the cap; query dropped");
                        continue;
                    }
                    self.dns_inflight += 1;
                    let handler = self.handler.clone();
                    let tx = self.dns_tx.clone();
                    let name = q.name.clone();
                    tokio::spawn(async move {
                        let answer = handler.resolve_for_guest(name).await;
                        let _ = tx.send(DnsDone {
                            packet,
                            to: from,
                            answer,
                        });
                    });
                    continue;
                }
                // AAAA (the guest network is IPv4 only) and every other type: no records.
                Ok(q) => q.response(DnsRcode::NoError, &[], self.cfg.dns_ttl),
                Err(DnsError::Ignore) => continue,
                Err(DnsError::Reply(rc)) => match DnsQuery::error_response(&packet, rc) {
                    Some(r) => r,
                    None => continue,
                },
            };
            let sock = self.sockets.get_mut::<udp::Socket<'_>>(self.dns_socket);
            let _ = sock.send_slice(&reply, from);
        }
        let sock = self.sockets.get_mut::<udp::Socket<'_>>(self.dns_socket);
        sock.register_recv_waker(cx.waker());
        progress
    }

    fn answer(&mut self, done: DnsDone) {
        let Ok(q) = DnsQuery::parse(&done.packet) else {
            return;
        };
        let ttl = self.cfg.dns_ttl;
        let reply = match done.answer {
            GuestAnswer::Answer(ips) => {
                let now = Instant::now();
                let keep = self
                    .cfg
                    .name_retention
                    .max(Duration::from_secs(u64::from(ttl)));
                let cfg = &self.cfg;
                let mut v4: Vec<Ipv4Addr> = Vec::new();
                for ip in ips {
                    let Some(g) = self.names.guest_address(ip, |a| cfg.in_subnet(a)) else {
                        continue;
                    };
                    if !v4.contains(&g) {
                        self.names.record(&q.name, IpAddr::V4(g), now, keep);
                        v4.push(g);
                    }
                }
                q.response(DnsRcode::NoError, &v4, ttl)
            }
            GuestAnswer::Denied | GuestAnswer::NotFound => q.response(DnsRcode::NxDomain, &[], ttl),
            GuestAnswer::Failed => q.response(DnsRcode::ServFail, &[], ttl),
        };
        let sock = self.sockets.get_mut::<udp::Socket<'_>>(self.dns_socket);
        let _ = sock.send_slice(&reply, done.to);
    }

    /// Lets smoltcp send what the sockets have queued.
    fn egress(&mut self) -> bool {
        let now = self.now();
        let mut any = false;
        loop {
            match self
                .iface
                .poll_egress(now, &mut self.link, &mut self.sockets)
            {
                smoltcp::iface::PollResult::None => break,
                smoltcp::iface::PollResult::SocketStateChanged => any = true,
            }
        }
        self.iface.poll_maintenance(now);
        any
    }

    fn arm_timer(&mut self, cx: &mut Context<'_>) {
        let now = self.now();
        let smol = self
            .iface
            .poll_delay(now, &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()));
        let sweep = self.next_sweep.saturating_duration_since(Instant::now());
        let mut wait = smol.map_or(sweep, |d| d.min(sweep));
        if self.link.has_backlog() {
            // smoltcp wants to send but the fd is full: its writability wakes us, not a spin.
            wait = wait.max(Duration::from_millis(1));
        }
        let deadline = tokio::time::Instant::now() + wait;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            // Already due: run another round right away.
            cx.waker().wake_by_ref();
        }
    }
}

fn smol_now(epoch: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(epoch.elapsed().as_micros() as i64)
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}
