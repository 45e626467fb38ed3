//! The exec protocol's frame decoder on arbitrary bytes: it must never panic, never buffer more
//! than a frame, and every frame it accepts must re-encode to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sbx_exec::{Frame, FrameDecoder, MAX_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    // Split the input at a data-chosen point to exercise partial reads.
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut dec = FrameDecoder::new();
    for part in [&data[..split], &data[split..]] {
        dec.extend(part);
        loop {
            match dec.decode() {
                Ok(Some(frame)) => {
                    let bytes = frame.to_bytes();
                    assert!(bytes.len() <= MAX_FRAME_LEN as usize + 4);
                    // Canonical encoding: decoding what we encode gives the same frame.
                    let mut again = FrameDecoder::new();
                    again.extend(&bytes);
                    assert_eq!(again.decode().unwrap(), Some(frame));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(dec.buffered() <= data.len());
    }
    // Bodies alone, too.
    let _ = Frame::decode_body(data);
});
