//! The virtio-vsock packet header (`struct virtio_vsock_hdr`, virtio 1.2 section 5.10.6) and the
//! host-side `CONNECT <port>` line.
//!
//! Both parsers take bytes the guest or a host process controls. They are pure functions that
//! never panic and bound every length, so fuzz targets can call them directly.

/// Size of `struct virtio_vsock_hdr` on the wire.
pub const VSOCK_HDR_LEN: usize = 44;
/// Largest payload one packet may carry. Linux never sends more (`VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`);
/// a header claiming more is rejected.
pub const VSOCK_MAX_PKT_LEN: u32 = 64 << 10;
/// The host's context ID.
pub const VSOCK_HOST_CID: u64 = 2;

/// `type`: connection-oriented stream.
pub const VSOCK_TYPE_STREAM: u16 = 1;

/// `flags` of a `SHUTDOWN`: the sender will receive no more data.
pub const VSOCK_SHUTDOWN_RCV: u32 = 1;
/// `flags` of a `SHUTDOWN`: the sender will send no more data.
pub const VSOCK_SHUTDOWN_SEND: u32 = 2;
/// Both shutdown flags.
pub const VSOCK_SHUTDOWN_BOTH: u32 = VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND;

/// Packet operations (`op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Op {
    /// Connection request.
    Request = 1,
    /// Connection accepted.
    Response = 2,
    /// Connection reset.
    Rst = 3,
    /// One or both directions are shut (see `flags`).
    Shutdown = 4,
    /// Stream data.
    Rw = 5,
    /// Unsolicited credit information.
    CreditUpdate = 6,
    /// Ask the peer for a credit update.
    CreditRequest = 7,
}

impl Op {
    /// The operation for a raw `op` value, if it is one we know.
    pub fn from_raw(op: u16) -> Option<Self> {
        Some(match op {
            1 => Self::Request,
            2 => Self::Response,
            3 => Self::Rst,
            4 => Self::Shutdown,
            5 => Self::Rw,
            6 => Self::CreditUpdate,
            7 => Self::CreditRequest,
            _ => return None,
        })
    }
}

/// A decoded `virtio_vsock_hdr`. `type_` and `op` are kept raw so that a packet with an
/// unknown type or operation can still be answered with a reset to its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketHeader {
    /// Sender's context ID.
    pub src_cid: u64,
    /// Receiver's context ID.
    pub dst_cid: u64,
    /// Sender's port.
    pub src_port: u32,
    /// Receiver's port.
    pub dst_port: u32,
    /// Payload length in bytes (at most [`VSOCK_MAX_PKT_LEN`] after [`parse_header`]).
    pub len: u32,
    /// Socket type (see [`VSOCK_TYPE_STREAM`]).
    pub type_: u16,
    /// Operation (see [`Op`]).
    pub op: u16,
    /// Operation flags (shutdown flags for `SHUTDOWN`).
    pub flags: u32,
    /// Sender's receive buffer size for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer so far (wrapping).
    pub fwd_cnt: u32,
}

/// Why a header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Fewer than [`VSOCK_HDR_LEN`] bytes.
    #[error("vsock header is {0} bytes, {VSOCK_HDR_LEN} needed")]
    Short(usize),
    /// `len` is larger than [`VSOCK_MAX_PKT_LEN`].
    #[error("vsock packet length {0} exceeds {VSOCK_MAX_PKT_LEN}")]
    Oversized(u32),
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_le_bytes(a)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decode the header at the start of `bytes` (trailing bytes are ignored) and bound its
/// payload length. Never panics.
pub fn parse_header(bytes: &[u8]) -> Result<PacketHeader, HeaderError> {
    let Some(b) = bytes.get(..VSOCK_HDR_LEN) else {
        return Err(HeaderError::Short(bytes.len()));
    };
    let hdr = PacketHeader {
        src_cid: le_u64(b, 0),
        dst_cid: le_u64(b, 8),
        src_port: le_u32(b, 16),
        dst_port: le_u32(b, 20),
        len: le_u32(b, 24),
        type_: le_u16(b, 28),
        op: le_u16(b, 30),
        flags: le_u32(b, 32),
        buf_alloc: le_u32(b, 36),
        fwd_cnt: le_u32(b, 40),
    };
    if hdr.len > VSOCK_MAX_PKT_LEN {
        return Err(HeaderError::Oversized(hdr.len));
    }
    Ok(hdr)
}

impl PacketHeader {
    /// The known operation, if any.
    pub fn op(&self) -> Option<Op> {
        Op::from_raw(self.op)
    }

    /// Encode as the 44 little-endian bytes of `virtio_vsock_hdr`.
    pub fn to_bytes(&self) -> [u8; VSOCK_HDR_LEN] {
        let mut b = [0u8; VSOCK_HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Longest `CONNECT <port>` line (with its newline) a host process may send.
pub const CONNECT_LINE_MAX: usize = 32;

/// Parse a host-side connect line, `CONNECT <port>` without its trailing `\n` (a trailing
/// `\r` is tolerated). Returns the guest port. Never panics.
pub fn parse_connect_line(line: &[u8]) -> Option<u32> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.strip_prefix(b"CONNECT ")?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PacketHeader {
        PacketHeader {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x1234_5678,
            dst_port: 52,
            len: 100,
            type_: VSOCK_TYPE_STREAM,
            op: Op::Rw as u16,
            flags: 0,
            buf_alloc: 65536,
            fwd_cnt: 0xdead_beef,
        }
    }

    #[test]
    fn round_trip_and_layout() {
        let h = sample();
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[24..28], &100u32.to_le_bytes());
        assert_eq!(&b[30..32], &5u16.to_le_bytes());
        assert_eq!(&b[40..44], &0xdead_beefu32.to_le_bytes());
        assert_eq!(parse_header(&b), Ok(h));
        // Trailing bytes are ignored.
        let mut longer = b.to_vec();
        longer.extend_from_slice(&[0xff; 10]);
        assert_eq!(parse_header(&longer), Ok(h));
        assert_eq!(h.op(), Some(Op::Rw));
    }

    #[test]
    fn short_and_oversized_are_rejected() {
        let b = sample().to_bytes();
        for n in 0..VSOCK_HDR_LEN {
            assert_eq!(parse_header(&b[..n]), Err(HeaderError::Short(n)));
        }
        let mut h = sample();
        h.len = VSOCK_MAX_PKT_LEN;
        assert!(parse_header(&h.to_bytes()).is_ok());
        h.len = VSOCK_MAX_PKT_LEN + 1;
        assert_eq!(
            parse_header(&h.to_bytes()),
            Err(HeaderError::Oversized(VSOCK_MAX_PKT_LEN + 1))
        );
        h.len = u32::MAX;
        assert!(parse_header(&h.to_bytes()).is_err());
    }

    #[test]
    fn unknown_ops() {
        assert_eq!(Op::from_raw(0), None);
        assert_eq!(Op::from_raw(8), None);
        for op in 1..=7 {
            assert_eq!(Op::from_raw(op).map(|o| o as u16), Some(op));
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic sweep; the fuzz target covers the rest.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for n in 0..200 {
            let bytes: Vec<u8> = (0..n % 60)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if let Ok(h) = parse_header(&bytes) {
                assert!(h.len <= VSOCK_MAX_PKT_LEN);
            }
            let _ = parse_connect_line(&bytes);
        }
    }

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect_line(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect_line(b"CONNECT 4294967295\r"), Some(u32::MAX));
        assert_eq!(parse_connect_line(b"CONNECT 4294967296"), None);
        assert_eq!(parse_connect_line(b"CONNECT "), None);
        assert_eq!(parse_connect_line(b"CONNECT -1"), None);
        assert_eq!(parse_connect_line(b"CONNECT +1"), None);
        assert_eq!(parse_connect_line(b"connect 52"), None);
        assert_eq!(parse_connect_line(b"CONNECT 52 "), None);
        assert_eq!(parse_connect_line(b""), None);
    }
}
