//! Replays the committed fuzz seeds (`fuzz/seeds/TARGET/*`) through the very
//! bodies the cargo-fuzz targets run (`fuzz/targets.rs`), on stable, so every
//! input that once found a bug stays fixed in CI.

use std::path::Path;

#[path = "../../../fuzz/targets.rs"]
mod targets;

#[test]
fn fuzz_seeds_replay_through_every_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    for (name, body) in targets::TARGETS {
        let dir = root.join(name);
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("seed entry").path();
            let data = std::fs::read(&path).expect("seed bytes");
            body(&data);
            replayed += 1;
        }
        assert!(replayed > 0, "no seeds for fuzz target {name}");
        let target = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        assert!(target.exists(), "{name} has seeds but no cargo-fuzz target");
    }
}
