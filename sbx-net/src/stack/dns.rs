//! The gateway's DNS wire format: parsing one guest query (untrusted bytes) and building the
//! answer. Only what a stub resolver sends is understood: a standard query with one question.

use std::net::Ipv4Addr;

/// Longest name in presentation form (RFC 1035: 255 octets on the wire).
const MAX_NAME: usize = 253;
/// Answers are kept under the classic 512-byte UDP limit, so no truncation or TCP retry.
const MAX_UDP_ANSWER: usize = 512;

/// Query types the gateway treats specially.
pub const QTYPE_A: u16 = 1;
/// `AAAA`: answered empty (the guest network is IPv4 only).
#[cfg(test)]
pub const QTYPE_AAAA: u16 = 28;
const QCLASS_IN: u16 = 1;

/// DNS response codes the gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsRcode {
    /// No error (possibly no answers).
    NoError = 0,
    /// The query could not be understood.
    FormErr = 1,
    /// The lookup failed.
    ServFail = 2,
    /// The name does not exist (or the policy hides it).
    NxDomain = 3,
    /// Not a standard query.
    NotImp = 4,
    /// Refused (not class IN, unusable name).
    Refused = 5,
}

/// Why a packet is not a query the gateway answers normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsError {
    /// Shorter than a DNS header, or a response: not answered at all.
    Ignore,
    /// Answer with this code and the header only.
    Reply(DnsRcode),
}

/// One parsed guest query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuery<'a> {
    /// Query id, echoed in the answer.
    pub id: u16,
    /// Recursion desired (echoed).
    pub recursion_desired: bool,
    /// The question name: lowercase labels joined by dots, no trailing dot.
    pub name: String,
    /// The question type.
    pub qtype: u16,
    /// The question exactly as sent (name, type, class), echoed in the answer.
    question: &'a [u8],
}

impl<'a> DnsQuery<'a> {
    /// Parses a guest query. Never panics; every length is checked against the packet.
    pub fn parse(packet: &'a [u8]) -> Result<DnsQuery<'a>, DnsError> {
        if packet.len() < 12 {
            return Err(DnsError::Ignore);
        }
        let flags = u16::from_be_bytes([packet[2], packet[3]]);
        if flags & 0x8000 != 0 {
            // A response: never answer one (no reflection loops).
            return Err(DnsError::Ignore);
        }
        let opcode = (flags >> 11) & 0xf;
        if opcode != 0 {
            return Err(DnsError::Reply(DnsRcode::NotImp));
        }
        let qdcount = u16::from_be_bytes([packet[4], packet[5]]);
        if qdcount != 1 {
            return Err(DnsError::Reply(DnsRcode::FormErr));
        }
        let mut pos = 12;
        let mut name = String::new();
        let mut wire_len = 0usize;
        let mut bad_name = false;
        loop {
            let Some(&len) = packet.get(pos) else {
                return Err(DnsError::Reply(DnsRcode::FormErr));
            };
            pos += 1;
            if len == 0 {
                break;
            }
            if len & 0xc0 != 0 {
                // Compression pointers (and the reserved label types) make no sense in the
                // only question of a query.
                return Err(DnsError::Reply(DnsRcode::FormErr));
            }
            let len = usize::from(len);
            let Some(label) = packet.get(pos..pos + len) else {
                return Err(DnsError::Reply(DnsRcode::FormErr));
            };
            pos += len;
            wire_len += len + 1;
            if wire_len > MAX_NAME + 1 {
                return Err(DnsError::Reply(DnsRcode::FormErr));
            }
            if !name.is_empty() {
                name.push('.');
            }
            for &b in label {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                    name.push(char::from(b.to_ascii_lowercase()));
                } else {
                    bad_name = true;
                }
            }
        }
        let Some(tail) = packet.get(pos..pos + 4) else {
            return Err(DnsError::Reply(DnsRcode::FormErr));
        };
        let qtype = u16::from_be_bytes([tail[0], tail[1]]);
        let qclass = u16::from_be_bytes([tail[2], tail[3]]);
        if qclass != QCLASS_IN || bad_name || name.is_empty() {
            return Err(DnsError::Reply(DnsRcode::Refused));
        }
        Ok(DnsQuery {
            id: u16::from_be_bytes([packet[0], packet[1]]),
            recursion_desired: flags & 0x0100 != 0,
            name,
            qtype,
            question: &packet[12..pos + 4],
        })
    }

    /// The answer: `rcode`, the question echoed, and one A record per address (as many as
    /// fit in 512 bytes) with `ttl`.
    pub fn response(&self, rcode: DnsRcode, answers: &[Ipv4Addr], ttl: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_UDP_ANSWER);
        let room = MAX_UDP_ANSWER.saturating_sub(12 + self.question.len()) / 16;
        let n = if rcode == DnsRcode::NoError {
            answers.len().min(room)
        } else {
            0
        };
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&response_flags(self.recursion_desired, rcode).to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(self.question);
        for ip in &answers[..n] {
            // Name: pointer to the question's name at offset 12.
            out.extend_from_slice(&[0xc0, 0x0c]);
            out.extend_from_slice(&QTYPE_A.to_be_bytes());
            out.extend_from_slice(&QCLASS_IN.to_be_bytes());
            out.extend_from_slice(&ttl.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
        out
    }

    /// A header-only answer with `rcode` to a packet that could not be parsed as a query, or
    /// `None` when the packet is not answered at all.
    pub fn error_response(packet: &[u8], rcode: DnsRcode) -> Option<Vec<u8>> {
        if packet.len() < 12 || packet[2] & 0x80 != 0 {
            return None;
        }
        let rd = packet[2] & 0x01 != 0;
        let mut flags = response_flags(rd, rcode);
        // Keep the opcode the client sent.
        flags |= u16::from(packet[2] & 0x78) << 8;
        let mut out = Vec::with_capacity(12);
        out.extend_from_slice(&packet[0..2]);
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&[0; 8]);
        Some(out)
    }
}

fn response_flags(recursion_desired: bool, rcode: DnsRcode) -> u16 {
    // QR, opcode 0, RD echoed, RA set.
    0x8000 | if recursion_desired { 0x0100 } else { 0 } | 0x0080 | rcode as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = Vec::new();
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn parses_a_stub_query_and_answers_it() {
        let q = query(0x1234, "Api.Example.COM", QTYPE_A);
        let p = DnsQuery::parse(&q).unwrap();
        assert_eq!(p.id, 0x1234);
        assert_eq!(p.name, "api.example.com");
        assert_eq!(p.qtype, QTYPE_A);
        let r = p.response(DnsRcode::NoError, &[Ipv4Addr::new(1, 2, 3, 4)], 60);
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(&r[6..8], &[0, 1], "one answer");
        // The question is echoed as sent (case preserved), then the record.
        assert_eq!(&r[12..q.len()], &q[12..]);
        assert_eq!(&r[r.len() - 4..], &[1, 2, 3, 4]);
        let nx = p.response(DnsRcode::NxDomain, &[Ipv4Addr::new(1, 2, 3, 4)], 60);
        assert_eq!(nx[3] & 0x0f, 3);
        assert_eq!(&nx[6..8], &[0, 0]);
    }

    #[test]
    fn answers_fit_in_512_bytes() {
        let q = query(1, "a.example", QTYPE_A);
        let p = DnsQuery::parse(&q).unwrap();
        let many: Vec<Ipv4Addr> = (0..200).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        let r = p.response(DnsRcode::NoError, &many, 60);
        assert!(r.len() <= 512);
        let n = u16::from_be_bytes([r[6], r[7]]) as usize;
        assert_eq!(r.len(), q.len() + n * 16);
    }

    #[test]
    fn rejects_malformed_queries() {
        assert_eq!(DnsQuery::parse(&[0; 5]), Err(DnsError::Ignore));
        let mut resp = query(1, "a.b", QTYPE_A);
        resp[2] |= 0x80;
        assert_eq!(DnsQuery::parse(&resp), Err(DnsError::Ignore));
        let mut two = query(1, "a.b", QTYPE_A);
        two[5] = 2;
        assert_eq!(
            DnsQuery::parse(&two),
            Err(DnsError::Reply(DnsRcode::FormErr))
        );
        let mut ptr = query(1, "a.b", QTYPE_A);
        ptr[12] = 0xc0;
        assert_eq!(
            DnsQuery::parse(&ptr),
            Err(DnsError::Reply(DnsRcode::FormErr))
        );
        let q = query(1, "a.b", QTYPE_A);
        for cut in 0..q.len() {
            assert!(DnsQuery::parse(&q[..cut]).is_err(), "cut at {cut}");
        }
        let odd = query(1, "a\u{1}.b", QTYPE_A);
        assert_eq!(
            DnsQuery::parse(&odd),
            Err(DnsError::Reply(DnsRcode::Refused))
        );
        let long = query(1, &vec!["a".repeat(63); 5].join("."), QTYPE_A);
        assert_eq!(
            DnsQuery::parse(&long),
            Err(DnsError::Reply(DnsRcode::FormErr))
        );
        let mut iq = query(1, "a.b", QTYPE_A);
        iq[2] |= 0x08; // opcode 1
        assert_eq!(DnsQuery::parse(&iq), Err(DnsError::Reply(DnsRcode::NotImp)));
        let e = DnsQuery::error_response(&iq, DnsRcode::NotImp).unwrap();
        assert_eq!(e.len(), 12);
        assert_eq!(e[2] & 0x78, 0x08);
        assert_eq!(e[3] & 0x0f, 4);
        assert!(DnsQuery::error_response(&resp, DnsRcode::FormErr).is_none());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic sweep; the fuzz target covers the rest.
        let base = query(7, "www.example.org", QTYPE_AAAA);
        let mut x: u32 = 1;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut p = base.clone();
            let i = (x as usize) % p.len();
            p[i] = (x >> 8) as u8;
            p.truncate(((x >> 16) as usize) % (p.len() + 1));
            if let Ok(q) = DnsQuery::parse(&p) {
                let _ = q.response(DnsRcode::NoError, &[Ipv4Addr::LOCALHOST], 1);
            } else if let Err(DnsError::Reply(rc)) = DnsQuery::parse(&p) {
                let _ = DnsQuery::error_response(&p, rc);
            }
        }
    }
}
