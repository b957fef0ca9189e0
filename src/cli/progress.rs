//! Progress bars on stderr, shown only when stderr is a terminal (silent in pipes, files and
//! tests).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar, or nothing when stderr is not a terminal.
pub struct Progress(Option<ProgressBar>);

/// What a bar counts.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    /// Calls, lines or records.
    Items,
    /// Bytes (of an input file).
    Bytes,
}

impl Progress {
    fn visible() -> bool {
        std::io::stderr().is_terminal()
    }

    /// A bar towards `total` (a spinner with a count and a rate when the total is unknown).
    pub fn bar(message: &str, total: Option<u64>, unit: Unit) -> Progress {
        if !Self::visible() {
            return Progress(None);
        }
        let (pos, rate) = match unit {
            Unit::Items => ("{human_pos}/{human_len}", "{per_sec}"),
            Unit::Bytes => ("{bytes}/{total_bytes}", "{bytes_per_sec}"),
        };
        let template = match total {
            Some(_) => format!(
                "{{spinner}} {{msg}} [{{elapsed_precise}}] {{wide_bar}} {pos} ({rate}, ETA {{eta}})"
            ),
            None => {
                let pos = pos.split('/').next().unwrap_or(pos);
                format!("{{spinner}} {{msg}} [{{elapsed_precise}}] {pos} ({rate})")
            }
        };
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = match total {
            Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        bar.set_style(style);
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress(Some(bar))
    }

    /// A spinner with elapsed time, for work of unknown length (compact, check).
    pub fn spinner(message: &str) -> Progress {
        if !Self::visible() {
            return Progress(None);
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]") {
            bar.set_style(style);
        }
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress(Some(bar))
    }

    /// Set the position.
    pub fn set(&self, pos: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(pos);
        }
    }

    /// Print a line on stderr above the bar (or plainly when there is no bar).
    pub fn println(&self, line: &str) {
        match &self.0 {
            Some(bar) => bar.suspend(|| {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }),
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
        }
    }

    /// Remove the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
