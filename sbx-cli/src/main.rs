fn main() -> std::process::ExitCode {
    // `sbx` is also the guest agent: started as `/init` (PID 1 of a VM or sandbox) or under the
    // name `sbx-guest`, it runs the agent and never returns here.
    sbx_guest::run_if_agent();
    // ...and the namespace backend's setup helper (re-executed by sbx-ns to build a sandbox).
    sbx_ns::run_if_helper();
    sbx_cli::main()
}
