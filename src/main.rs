//! The `profiledb` command line (see docs/cli.md).

mod cli;

/// mimalloc instead of the system allocator: a W1 call allocates and frees a few dozen small
/// blocks (parsed strings, trait values, decoded properties, records), and glibc's malloc spent
/// ~28 % of `profiledb serve`'s instructions on them across threads (docs/performance.md, "Ingest:
/// where the server's instructions go"). The library leaves the choice to its embedders.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
