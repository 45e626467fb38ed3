//! Helpers for tests that need KVM (feature `test-utils`).

/// Whether KVM tests must run: `SBX_REQUIRE_KVM=1` turns a missing `/dev/kvm` into a failure.
pub fn kvm_required() -> bool {
    std::env::var("SBX_REQUIRE_KVM").is_ok_and(|v| v == "1")
}

/// Return `Some(reason)` when KVM tests should be skipped; panic instead when
/// `SBX_REQUIRE_KVM=1`. Prefer the [`require_kvm!`](crate::require_kvm) macro.
pub fn kvm_skip_reason() -> Option<String> {
    let probe = crate::detect_kvm();
    if probe.available() {
        return None;
    }
    if kvm_required() {
        panic!("SBX_REQUIRE_KVM=1 but KVM is not usable: {}", probe.reason);
    }
    Some(probe.reason)
}

/// Skip the calling test (return early, printing why) when `/dev/kvm` is absent, unless
/// `SBX_REQUIRE_KVM=1`, in which case the test fails.
#[macro_export]
macro_rules! require_kvm {
    () => {
        if let Some(reason) = $crate::test_utils::kvm_skip_reason() {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("skipping: KVM not available: {reason}");
            }
            return;
        }
    };
}
