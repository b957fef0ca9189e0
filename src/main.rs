//! The `profiledb` command line (see docs/cli.md).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
