fn main() -> std::process::ExitCode {
    sbx_cli::main()
}
