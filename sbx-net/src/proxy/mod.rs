//! The egress proxy: listener, CONNECT tunnels, interception and forwarding.

mod config;
mod forward;
mod guard;
mod io;
mod server;
mod tunnel;
mod upstream;

pub use config::{Limits, ProxyConfig, Resolve, ResolveFuture, SocketAddrOrIp, SystemResolver};
pub use server::Proxy;
