//! virtio-net descriptor chains (receive or transmit), available ring and frame bytes straight
//! from the fuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sbx_vmm::test_utils::fuzz_net_queue(data);
});
