//! How far an import has come, on standard error: a bar when a person watches a terminal, a
//! plain line every few seconds when the output goes to a file or a CI log.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Between two plain progress lines.
const LINE_EVERY: Duration = Duration::from_secs(2);

pub enum Progress {
    Bar(ProgressBar),
    Lines {
        total: u64,
        done: u64,
        started: Instant,
        last: Instant,
    },
}

impl Progress {
    /// A bar if standard error is a terminal, lines otherwise.
    pub fn new(total: u64) -> Self {
        let now = Instant::now();
        if !std::io::stderr().is_terminal() {
            return Progress::Lines {
                total,
                done: 0,
                started: now,
                last: now,
            };
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} users ({percent}%, {eta} left)",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress::Bar(bar)
    }

    /// `count` more users are done.
    pub fn advance(&mut self, count: u64) {
        match self {
            Progress::Bar(bar) => bar.inc(count),
            Progress::Lines {
                total,
                done,
                started,
                last,
            } => {
                *done += count;
                if last.elapsed() >= LINE_EVERY {
                    *last = Instant::now();
                    let rate = per_second(*done, started.elapsed());
                    eprintln!(
                        "imported {} of {} users ({}%), {}/s",
                        grouped(*done),
                        grouped(*total),
                        *done * 100 / (*total).max(1),
                        grouped(rate),
                    );
                }
            }
        }
    }

    /// Takes the bar off the terminal (the summary follows on standard output).
    pub fn finish(self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

pub fn per_second(count: u64, elapsed: Duration) -> u64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        (count as f64 / seconds).round() as u64
    } else {
        count
    }
}

/// 100000 → "100,000".
pub fn grouped(number: u64) -> String {
    let digits = number.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(100_000), "100,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
