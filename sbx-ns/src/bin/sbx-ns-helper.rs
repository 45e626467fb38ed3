//! The namespace sandbox's setup helper, for programs that cannot call
//! `sbx_ns::run_if_helper()` first in their own `main` (test harnesses, for one).

#![allow(clippy::print_stderr)]

fn main() {
    sbx_ns::run_if_helper();
    eprintln!("sbx-ns-helper: only sbx-ns starts this program");
    std::process::exit(2);
}
