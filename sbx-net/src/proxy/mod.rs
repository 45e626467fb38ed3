//! The egress proxy: listener, CONNECT tunnels, interception and forwarding, and the entry
//! points the userspace network stack feeds (transparent and network flows, guest DNS).

mod config;
mod dns;
mod forward;
mod guard;
mod io;
mod network;
mod peek;
mod server;
mod transparent;
mod tunnel;
mod upstream;

pub use config::{Limits, ProxyConfig, Resolve, ResolveFuture, SocketAddrOrIp, SystemResolver};
pub use dns::GuestDns;
pub use network::{BlockedFlow, FlowProtocol};
#[doc(hidden)]
pub use peek::peek_for_fuzzing;
pub use server::Proxy;
