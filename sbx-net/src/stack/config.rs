//! Addresses, ports, buffer sizes and limits of the userspace network stack.

use std::net::Ipv4Addr;
use std::time::Duration;

/// Configuration of a [`super::NetStack`]. The defaults are the addresses every sbx guest is
/// set up with: guest `10.77.0.2/24`, gateway (the stack) `10.77.0.1`, DNS on the gateway's
/// port 53, the explicit proxy on the gateway's port 3128, MTU 1500.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StackConfig {
    /// The stack's own address: the guest's default gateway and DNS server.
    pub gateway: Ipv4Addr,
    /// The guest's address. Frames with another IPv4 source are dropped.
    pub guest: Ipv4Addr,
    /// Prefix length of the guest network.
    pub prefix_len: u8,
    /// The stack's MAC address.
    pub gateway_mac: [u8; 6],
    /// The guest's MAC address (for the device the guest sees; the stack learns it by ARP).
    pub guest_mac: [u8; 6],
    /// UDP port of the gateway's DNS server.
    pub dns_port: u16,
    /// TCP port of the explicit HTTP proxy on the gateway.
    pub proxy_port: u16,
    /// IP MTU of the link (the Ethernet frame is 14 bytes more).
    pub mtu: usize,
    /// Receive buffer of each TCP flow in the stack (guest to upstream). Larger buffers
    /// advertise larger (scaled) windows.
    pub tcp_rx_buffer: usize,
    /// Send buffer of each TCP flow in the stack (upstream to guest).
    pub tcp_tx_buffer: usize,
    /// Bytes buffered in each direction between a flow's socket and its proxy task.
    pub pipe_buffer: usize,
    /// Concurrent TCP flows; SYNs beyond this are answered with a reset and logged.
    pub max_flows: usize,
    /// Concurrent DNS lookups; queries beyond this are dropped (the guest retries).
    pub max_dns_lookups: usize,
    /// TTL of the A records the stack answers with.
    pub dns_ttl: u32,
    /// How long a name stays tied to an address after the answer that tied them, so
    /// connections made after the guest's cache outlived our TTL still find the name.
    pub name_retention: Duration,
    /// A flow whose handshake has not completed by then is dropped.
    pub handshake_timeout: Duration,
    /// A closing flow (one side done) that moves no bytes for this long is dropped.
    pub close_timeout: Duration,
    /// How long the stack waits for the guest to acknowledge data before giving up on a flow.
    pub retransmit_timeout: Duration,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            guest: Ipv4Addr::new(10, 77, 0, 2),
            prefix_len: 24,
            gateway_mac: [0x02, 0x5b, 0x78, 0x00, 0x00, 0x01],
            guest_mac: [0x02, 0x5b, 0x78, 0x00, 0x00, 0x02],
            dns_port: 53,
            proxy_port: 3128,
            mtu: 1500,
            tcp_rx_buffer: 256 * 1024,
            tcp_tx_buffer: 512 * 1024,
            pipe_buffer: 256 * 1024,
            max_flows: 4096,
            max_dns_lookups: 256,
            dns_ttl: 60,
            name_retention: Duration::from_secs(600),
            handshake_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(60),
            retransmit_timeout: Duration::from_secs(120),
        }
    }
}

impl StackConfig {
    /// The defaults (see the type's documentation).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the gateway and guest addresses and the prefix length.
    pub fn with_addresses(mut self, gateway: Ipv4Addr, guest: Ipv4Addr, prefix_len: u8) -> Self {
        self.gateway = gateway;
        self.guest = guest;
        self.prefix_len = prefix_len.min(32);
        self
    }

    /// Sets the gateway's and the guest's MAC addresses.
    pub fn with_macs(mut self, gateway: [u8; 6], guest: [u8; 6]) -> Self {
        self.gateway_mac = gateway;
        self.guest_mac = guest;
        self
    }

    /// Sets the explicit proxy's port on the gateway.
    pub fn with_proxy_port(mut self, port: u16) -> Self {
        self.proxy_port = port;
        self
    }

    /// Sets the link MTU (clamped to 576..=65535).
    pub fn with_mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu.clamp(576, 65535);
        self
    }

    /// Sets the per-flow buffer sizes: the stack's TCP receive and send buffers and the pipe
    /// to the proxy task (each clamped to 4 KiB..=64 MiB).
    pub fn with_buffers(mut self, tcp_rx: usize, tcp_tx: usize, pipe: usize) -> Self {
        let c = |n: usize| n.clamp(4096, 64 << 20);
        self.tcp_rx_buffer = c(tcp_rx);
        self.tcp_tx_buffer = c(tcp_tx);
        self.pipe_buffer = c(pipe);
        self
    }

    /// Sets the cap on concurrent TCP flows (at least 1).
    pub fn with_max_flows(mut self, n: usize) -> Self {
        self.max_flows = n.max(1);
        self
    }

    /// Sets the TTL of DNS answers and how long names stay tied to addresses.
    pub fn with_dns_ttl(mut self, ttl: u32, retention: Duration) -> Self {
        self.dns_ttl = ttl;
        self.name_retention = retention;
        self
    }

    /// Whether `ip` is in the guest network.
    pub(crate) fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len.min(32)))
        };
        u32::from(ip) & mask == u32::from(self.gateway) & mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_guest_setup() {
        let c = StackConfig::default();
        assert_eq!(c.gateway, Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(c.guest, Ipv4Addr::new(10, 77, 0, 2));
        assert!(c.in_subnet(Ipv4Addr::new(10, 77, 0, 200)));
        assert!(!c.in_subnet(Ipv4Addr::new(10, 77, 1, 2)));
        let c = c.with_buffers(1, usize::MAX, 8192).with_mtu(10);
        assert_eq!(
            (c.tcp_rx_buffer, c.tcp_tx_buffer, c.pipe_buffer),
            (4096, 64 << 20, 8192)
        );
        assert_eq!(c.mtu, 576);
    }
}
