//! Build progress: an indicatif bar on a terminal, periodic log lines
//! otherwise, or nothing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How a build reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A progress bar on stderr.
    Bar,
    /// Periodic log lines.
    Log,
    /// Nothing.
    Quiet,
}

impl ProgressMode {
    /// A bar when stderr is a terminal and `plain` is false, else log lines.
    pub fn for_stderr(plain: bool) -> Self {
        if !plain && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ProgressMode::Bar
        } else {
            ProgressMode::Log
        }
    }
}

/// The progress of one build phase. Shared by the rayon workers, so counting
/// is atomic and logging takes a lock only when it is free.
#[derive(Debug)]
pub(crate) struct Progress {
    mode: ProgressMode,
    bar: Option<indicatif::ProgressBar>,
    done: AtomicU64,
    last_log: Mutex<Instant>,
    what: &'static str,
    total: u64,
}

impl Progress {
    /// A phase called `what`, of `total` steps if known.
    pub(crate) fn new(mode: ProgressMode, what: &'static str, total: Option<u64>) -> Self {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = match total {
                Some(t) => indicatif::ProgressBar::new(t),
                None => indicatif::ProgressBar::new_spinner(),
            };
            let style = if total.is_some() {
                "{msg:>10} [{bar:40}] {pos}/{len} {per_sec} ETA {eta}"
            } else {
                "{msg:>10} {spinner} {pos} rows {per_sec}"
            };
            if let Ok(s) = indicatif::ProgressStyle::with_template(style) {
                bar.set_style(s.progress_chars("=> "));
            }
            bar.set_message(what);
            bar
        });
        Progress {
            mode,
            bar,
            done: AtomicU64::new(0),
            last_log: Mutex::new(Instant::now()),
            what,
            total: total.unwrap_or(0),
        }
    }

    /// Counts `n` more steps done.
    pub(crate) fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
        } else if self.mode == ProgressMode::Log
            && let Ok(mut last) = self.last_log.try_lock()
            && last.elapsed() >= Duration::from_secs(5)
        {
            *last = Instant::now();
            if self.total > 0 {
                tracing::info!(
                    stage = self.what,
                    done,
                    total = self.total,
                    "build progress"
                );
            } else {
                tracing::info!(stage = self.what, done, "build progress");
            }
        }
    }

    /// Ends the phase (clears the bar).
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
