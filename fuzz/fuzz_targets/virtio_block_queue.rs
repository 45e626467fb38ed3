//! virtio-blk descriptor chains, available ring and request bytes straight from the fuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sbx_vmm::test_utils::fuzz_block_queue(data);
});
