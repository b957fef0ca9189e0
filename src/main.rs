//! The `profiledb` command line.

fn main() {
    eprintln!("profiledb: the command line is not built yet");
    std::process::exit(2);
}
