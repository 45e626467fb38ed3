//! The transparent-interception peek parser (TLS ClientHello SNI / HTTP/1 `Host`) on
//! arbitrary bytes: it must never panic, must decide within its 16 KiB bound, and must reach
//! the same decision whether the bytes arrive at once or in reads of a data-chosen size
//! (ClientHellos split across records and reads are the normal case, not an edge case).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sbx_net::peek_for_fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let whole = peek_for_fuzzing(data, 0);
    let split = peek_for_fuzzing(data, usize::from(step % 32) + 1);
    assert_eq!(whole, split, "step {}", step % 32 + 1);
    if data.len() >= 16 * 1024 {
        assert_ne!(whole, "undecided");
    }
});
