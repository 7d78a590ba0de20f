//! breachcheck's end-to-end test suite (`tests/`), the benchmark report
//! (`src/bin/bench.rs`) and the abuse soak (`src/bin/soak.rs`). The library
//! holds what the tests and the soak share:
//!
//! * [`raw`]: raw HTTP/2 and TCP probes (what an abuser sends);
//! * [`soak`]: the abuse soak against a real `breachcheck-server`;
//! * [`browser`]: the web page driven in headless Chromium.

pub mod browser;
pub mod raw;
pub mod soak;

/// The CPU's model name from `/proc/cpuinfo`, for the reports' headers.
#[must_use]
pub fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|m| m.trim().to_owned())
}
