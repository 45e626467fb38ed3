//! The egress proxy as the stack's flow handler.

use std::net::SocketAddr;

use super::handler::{
    BoxFuture, DropReason, Dropped, DroppedProtocol, FlowHandler, FlowStream, GuestAnswer,
};
use crate::policy::Reason;
use crate::proxy::{BlockedFlow, FlowProtocol, GuestDns, Proxy};

impl FlowHandler for Proxy {
    fn serve_connection(&self, io: FlowStream, peer: SocketAddr) -> BoxFuture<'_, ()> {
        Box::pin(Proxy::serve_connection(self, io, peer))
    }

    fn serve_transparent(
        &self,
        io: FlowStream,
        original_dst: SocketAddr,
        names: Vec<String>,
    ) -> BoxFuture<'_, ()> {
        Box::pin(async move { Proxy::serve_transparent(self, io, original_dst, &names).await })
    }

    fn serve_network(&self, io: FlowStream, original_dst: SocketAddr) -> BoxFuture<'_, ()> {
        Box::pin(Proxy::serve_network(self, io, original_dst))
    }

    fn resolve_for_guest(&self, name: String) -> BoxFuture<'_, GuestAnswer> {
        Box::pin(async move {
            match Proxy::resolve_for_guest(self, &name).await {
                GuestDns::Denied => GuestAnswer::Denied,
                GuestDns::Answer(ips) => GuestAnswer::Answer(ips),
                GuestDns::NotFound => GuestAnswer::NotFound,
                _ => GuestAnswer::Failed,
            }
        })
    }

    fn log_blocked_network(&self, dropped: &Dropped) {
        let protocol = match dropped.protocol {
            DroppedProtocol::Tcp => FlowProtocol::Tcp,
            DroppedProtocol::Udp => FlowProtocol::Udp,
            DroppedProtocol::Icmp => FlowProtocol::Icmp,
            DroppedProtocol::Ipv6 => FlowProtocol::Ipv6,
            DroppedProtocol::Ip(n) => FlowProtocol::Other(n),
            // Not IP at all: recorded as protocol 0 to 0.0.0.0.
            _ => FlowProtocol::Other(0),
        };
        let reason = match dropped.reason {
            DropReason::FlowLimit => Reason::LimitExceeded,
            _ => Reason::ProtocolNotAllowed,
        };
        let port = (dropped.dst.port() != 0).then_some(dropped.dst.port());
        Proxy::log_blocked_network(
            self,
            BlockedFlow::new(protocol, dropped.dst.ip(), port, reason),
        );
    }
}
