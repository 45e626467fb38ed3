//! The exec protocol's frame decoder on arbitrary bytes: it must never panic, never buffer more
//! than it was given, and every frame it accepts must re-encode and decode to the same frame.
//! Bytes arrive both through `extend` and through `read_from` with reads of data-chosen sizes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sbx_exec::{Frame, FrameDecoder, MAX_FRAME_LEN};

/// A reader that hands out at most `step` bytes per call.
struct Chunked<'a> {
    data: &'a [u8],
    step: usize,
}

impl std::io::Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.len().min(self.step).min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Decodes everything available; false once the decoder reported an error.
fn drain(dec: &mut FrameDecoder) -> bool {
    loop {
        match dec.decode() {
            Ok(Some(frame)) => {
                let bytes = frame.to_bytes();
                assert!(bytes.len() <= MAX_FRAME_LEN as usize + 4);
                let mut again = FrameDecoder::new();
                again.extend(&bytes);
                assert_eq!(again.decode().unwrap(), Some(frame));
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut dec = FrameDecoder::new();
    for part in [&data[..split], &data[split..]] {
        dec.extend(part);
        if !drain(&mut dec) {
            break;
        }
        assert!(dec.buffered() <= data.len());
    }

    let step = data.get(1).map_or(1, |b| usize::from(*b) * 97 + 1);
    let mut r = Chunked { data, step };
    let mut dec = FrameDecoder::new();
    loop {
        match dec.read_from(&mut r) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => unreachable!("the reader never fails"),
        }
        if !drain(&mut dec) {
            break;
        }
        assert!(dec.buffered() <= data.len());
    }

    let _ = Frame::decode_body(data);
});
