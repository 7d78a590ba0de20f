//! Which curve25519-dalek backend this build runs, and the CPU features it
//! was compiled for: what `--version` and the bench report print (#13).
//!
//! dalek picks its backend in two steps. At build time its `build.rs`
//! compiles the AVX-512 IFMA code in when the target features include
//! `avx512ifma` and `avx512vl` (`-C target-cpu=native` on such a CPU) or
//! when `--cfg curve25519_dalek_backend="avx512"` asks for it; the AVX2 code
//! is compiled in on every x86_64. At run time it takes IFMA if compiled in
//! and the CPU has it, else AVX2 if the CPU has it, else the serial u64 code.
//! What runs is the same either way; how fast differs: code compiled for the
//! features (`target-cpu=native`) inlines the vector field arithmetic into
//! the scalar multiplication, while the runtime-dispatched build crosses a
//! `#[target_feature]` function boundary (no inlining, vectors passed
//! through memory) for every field operation.

/// The features that matter to the curve arithmetic, each with whether the
/// build was compiled for it (`+`) and whether this CPU has it.
const FEATURES: [&str; 6] = ["avx2", "bmi2", "adx", "avx512f", "avx512ifma", "avx512vl"];

/// Compiled-in target features among [`FEATURES`].
fn compiled() -> Vec<&'static str> {
    let mut on = Vec::new();
    if cfg!(target_feature = "avx2") {
        on.push("avx2");
    }
    if cfg!(target_feature = "bmi2") {
        on.push("bmi2");
    }
    if cfg!(target_feature = "adx") {
        on.push("adx");
    }
    if cfg!(target_feature = "avx512f") {
        on.push("avx512f");
    }
    if cfg!(target_feature = "avx512ifma") {
        on.push("avx512ifma");
    }
    if cfg!(target_feature = "avx512vl") {
        on.push("avx512vl");
    }
    on
}

/// Whether this CPU has `feature` (one of [`FEATURES`]).
#[cfg(target_arch = "x86_64")]
fn detected(feature: &str) -> bool {
    match feature {
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "bmi2" => std::arch::is_x86_feature_detected!("bmi2"),
        "adx" => std::arch::is_x86_feature_detected!("adx"),
        "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
        "avx512ifma" => std::arch::is_x86_feature_detected!("avx512ifma"),
        "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
        _ => false,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detected(_feature: &str) -> bool {
    false
}

/// The backend dalek runs on this CPU with this build: `avx512-ifma`,
/// `avx2` or `serial`, and whether it was compiled for the CPU's features
/// (`static`) or dispatched at run time (`runtime-dispatched`).
pub fn curve_backend() -> String {
    if !cfg!(target_arch = "x86_64") {
        return "serial (u64)".into();
    }
    let ifma_built = cfg!(curve25519_dalek_backend = "avx512")
        || (cfg!(target_feature = "avx512ifma") && cfg!(target_feature = "avx512vl"));
    let (backend, static_) = if ifma_built && detected("avx512ifma") && detected("avx512vl") {
        (
            "avx512-ifma",
            cfg!(target_feature = "avx512ifma") && cfg!(target_feature = "avx512vl"),
        )
    } else if detected("avx2") {
        ("avx2", cfg!(target_feature = "avx2"))
    } else {
        return "serial (u64)".into();
    };
    let how = if static_ {
        "compiled for this CPU"
    } else {
        "runtime-dispatched: build with -C target-cpu=native for the fast path"
    };
    format!("{backend} ({how})")
}

/// One line for `--version`: the backend, then the features compiled in
/// and those this CPU has.
pub fn build_description() -> String {
    let compiled = compiled();
    let cpu: Vec<&str> = FEATURES.iter().copied().filter(|f| detected(f)).collect();
    let list = |v: &[&str]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(",")
        }
    };
    format!(
        "curve25519-dalek backend: {}; compiled for: {}; this CPU: {}",
        curve_backend(),
        list(&compiled),
        list(&cpu)
    )
}

/// `version` and then [`build_description`], for clap's `long_version`
/// (`--version`); computed once per process.
pub fn long_version(version: &'static str) -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| format!("{version}\n{}", build_description()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_names_a_backend_and_the_features() {
        let d = build_description();
        assert!(d.starts_with("curve25519-dalek backend: "), "{d}");
        assert!(
            d.contains("compiled for: ") && d.contains("this CPU: "),
            "{d}"
        );
        // What the CPU has is what the runtime check says.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            assert!(d.contains("avx2"), "{d}");
        }
        // A feature compiled in must be one the CPU running the tests has
        // (else the test binary could not run at all).
        for f in compiled() {
            assert!(detected(f), "{f} compiled in but not detected");
        }
    }
}
