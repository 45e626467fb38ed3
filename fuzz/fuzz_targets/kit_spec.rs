//! The kit spec parser and validator on arbitrary input: they must never panic, every failure
//! must carry located diagnostics, and every kit that validates must merge onto a template
//! without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match sbx_kit::Kit::parse(src, "spec.yaml") {
        Ok(kit) => {
            assert!(!kit.name().is_empty());
            if kit.kind() == sbx_kit::Kind::Mixin {
                let base = sbx_kit::template("copilot").expect("built-in template");
                let _ = sbx_kit::merge(&base, std::slice::from_ref(&kit));
            } else {
                let merged = sbx_kit::merge(&kit, &[]);
                // An agent kit alone cannot conflict with itself beyond what validation caught.
                assert!(merged.is_ok(), "{:?}", merged.err());
            }
        }
        Err(e) => {
            for d in e.diagnostics() {
                assert!(d.line >= 1 && d.column >= 1, "{d}");
                let _ = d.render();
            }
        }
    }
});
