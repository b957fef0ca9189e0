//! The `profiledb` command line (see docs/cli.md).

mod cli;

/// mimalloc instead of the system allocator: a W1 call allocates and frees a few dozen small
/// blocks (parsed strings, trait values, decoded properties, records), and glibc's malloc spent
/// ~28 % of `profiledb serve`'s instructions on them across threads (docs/performance.md, "Ingest:
/// where the server's instructions go"). The library leaves the choice to its embedders.
/// Built with `no_thp`: its arenas are not advised into transparent huge pages, which cost
/// 15-35 MB of peak RSS on W1 (each 2 MiB page zeroed whole when first touched, however
/// little of it is used) for no measurable speed (docs/performance.md, "Engine round 32").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
