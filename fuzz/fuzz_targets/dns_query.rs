//! The gateway DNS parser (sbx-net's userspace stack) on arbitrary guest bytes: it must never
//! panic, every accepted name must be in the normalised form the policy sees, and every
//! answer must echo the query id, stay within 512 bytes and never be taken for a query.

#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use sbx_net::{DnsError, DnsQuery, DnsRcode};

fuzz_target!(|data: &[u8]| {
    match DnsQuery::parse(data) {
        Ok(q) => {
            assert!(!q.name.is_empty() && q.name.len() <= 253, "{:?}", q.name);
            assert!(q.name.bytes().all(|b| b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'-' | b'_' | b'.')));
            let many = [Ipv4Addr::new(192, 0, 2, 1); 64];
            for rc in [DnsRcode::NoError, DnsRcode::NxDomain, DnsRcode::ServFail] {
                let r = q.response(rc, &many, 60);
                assert!(r.len() <= 512, "{}", r.len());
                assert_eq!(r[..2], data[..2]);
                assert_eq!(
                    DnsQuery::parse(&r),
                    Err(DnsError::Ignore),
                    "answers are responses"
                );
            }
        }
        Err(DnsError::Reply(rc)) => {
            let r = DnsQuery::error_response(data, rc).expect("a reply for a replyable error");
            assert_eq!(r.len(), 12);
            assert_eq!(r[..2], data[..2]);
            assert_eq!(DnsQuery::parse(&r), Err(DnsError::Ignore));
        }
        // Too short, or a response: never answered.
        Err(_) => {}
    }
});
