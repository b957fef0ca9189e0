//! The cost of parsing JSON lines into messages, for docs/performance.md: the direct parser
//! (`Message::parse`) against the one it replaced (a `serde_json::Value`, then
//! `Message::from_json`), on the first N lines of a file.
//!
//! ```sh
//! cargo run --release -- gen --calls 100000 --out /tmp/w1.jsonl
//! cargo run --release --example parse_cost -- /tmp/w1.jsonl 100000 direct
//! cargo run --release --example parse_cost -- /tmp/w1.jsonl 100000 value
//! # instruction counts, whatever else the machine is doing (subtract the `none` run):
//! valgrind --tool=callgrind target/release/examples/parse_cost /tmp/w1.jsonl 20000 direct
//! ```

use std::hint::black_box;
use std::time::Instant;

use profiledb::Message;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, count, mode] = &args[..] else {
        eprintln!("usage: parse_cost FILE COUNT direct|value|none");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("COUNT is a number");
    let text = std::fs::read(file).expect("read FILE");
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .take(count)
        .collect();
    let started = Instant::now();
    let mut ok = 0usize;
    for line in &lines {
        let parsed = match mode.as_str() {
            "direct" => Message::parse(line).is_ok(),
            "value" => serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .is_some_and(|v| Message::from_json(&v).is_ok()),
            _ => !line.is_empty(),
        };
        ok += usize::from(black_box(parsed));
    }
    let elapsed = started.elapsed();
    println!(
        "{mode}: {} lines, {ok} parsed, {:.2} us per line",
        lines.len(),
        elapsed.as_secs_f64() * 1e6 / lines.len().max(1) as f64
    );
}
