//! keelctl: the command-line client of keeld's management REST API. Everything
//! lives in `keel::cli`; this file only hands over the exit code.

fn main() -> std::process::ExitCode {
    keel::cli::main()
}
