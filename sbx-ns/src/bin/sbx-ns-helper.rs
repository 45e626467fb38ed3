//! A ready-made multi-call binary for programs that cannot call the hooks first in their own
//! `main` (test harnesses, for one): the namespace setup helper (`sbx_ns::run_if_helper`) and
//! the guest agent (`sbx_guest::run_if_agent`, when started as `sbx-guest`).

#![allow(clippy::print_stderr)]

fn main() {
    sbx_ns::run_if_helper();
    sbx_guest::run_if_agent();
    eprintln!("sbx-ns-helper: only sbx-ns starts this program");
    std::process::exit(2);
}
