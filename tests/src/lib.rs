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
