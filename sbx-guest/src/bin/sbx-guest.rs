//! The guest agent binary. See the `sbx_guest` crate docs and `sbx-guest --help`.

fn main() {
    std::process::exit(sbx_guest::main_with_args(std::env::args_os().skip(1)));
}
