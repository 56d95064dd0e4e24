//! Progress on stderr: an indicatif bar on a terminal, plain timestamped lines otherwise (CI logs,
//! scripts), nothing with `--quiet`. stdout is kept for the report alone.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    started: Instant,
    last_line: Option<Instant>,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress {
            bar: None,
            quiet,
            started: Instant::now(),
            last_line: None,
        }
    }

    fn tty(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }

    /// Announces a phase.
    pub fn phase(&mut self, msg: &str) {
        self.finish_bar();
        if !self.quiet {
            eprintln!("[{:7.2}s] {msg}", self.started.elapsed().as_secs_f64());
        }
    }

    /// Connect progress: `done` of `total` handshakes finished (`failed` of them failed).
    pub fn connecting(&mut self, done: u64, failed: u64, total: u64) {
        if self.quiet {
            return;
        }
        if self.tty() {
            let bar = self.bar.get_or_insert_with(|| {
                let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                b.set_style(
                    ProgressStyle::with_template(
                        "connect+login [{bar:40}] {pos}/{len} {per_sec} eta {eta} {msg}",
                    )
                    .expect("progress template")
                    .progress_chars("=> "),
                );
                b
            });
            bar.set_position(done);
            if failed > 0 {
                bar.set_message(format!("({failed} failed)"));
            }
        } else {
            let due = match self.last_line {
                None => true,
                Some(t) => t.elapsed() >= Duration::from_secs(1),
            };
            if due || done == total {
                self.last_line = Some(Instant::now());
                eprintln!(
                    "[{:7.2}s] connect+login {done}/{total} ({failed} failed)",
                    self.started.elapsed().as_secs_f64()
                );
            }
        }
    }

    pub fn finish_bar(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
