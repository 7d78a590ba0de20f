//! breachcheck's end-to-end test suite (`tests/`) and benchmark report
//! (`src/bin/bench.rs`). The library part is empty: everything lives in the
//! test and bench targets.
