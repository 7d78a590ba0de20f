//! `deploy/cpu-dispatch`, the image's launcher (#13): it starts the fastest
//! build the CPU can run, from the CPU's flags. Run for real (`sh`) against
//! fake builds and fake `/proc/cpuinfo` files.

use std::path::Path;
use std::process::Command;

use crate::support::TempDir;

const V3: &str = "avx avx2 bmi1 bmi2 fma f16c movbe abm xsave";
const V4_IFMA: &str = "avx512f avx512bw avx512cd avx512dq avx512vl avx512ifma";

/// A libexec tree with a fake `name` in each of `variants` (it prints its
/// variant and its arguments), and the launcher linked as `name`.
fn tree(dir: &Path, variants: &[&str], name: &str) {
    for v in variants {
        let d = dir.join(v);
        std::fs::create_dir_all(&d).expect("mkdir");
        let bin = d.join(name);
        std::fs::write(&bin, format!("#!/bin/sh\necho {v} \"$@\"\n")).expect("write");
        Command::new("chmod")
            .arg("+x")
            .arg(&bin)
            .status()
            .expect("chmod");
    }
    let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cpu-dispatch");
    std::os::unix::fs::symlink(&launcher, dir.join(name)).expect("symlink");
}

fn run(dir: &Path, name: &str, flags: &str, force: Option<&str>) -> (Option<i32>, String) {
    let cpuinfo = dir.join("cpuinfo");
    std::fs::write(
        &cpuinfo,
        format!("processor\t: 0\nflags\t\t: fpu sse2 {flags}\n"),
    )
    .expect("cpuinfo");
    let mut cmd = Command::new(dir.join(name));
    cmd.args(["serve", "--x"])
        .env("BREACHCHECK_LIBEXEC", dir)
        .env("BREACHCHECK_CPUINFO", &cpuinfo)
        .env_remove("BREACHCHECK_BUILD");
    if let Some(v) = force {
        cmd.env("BREACHCHECK_BUILD", v);
    }
    let out = cmd.output().expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
            + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_launcher_starts_the_fastest_build_the_cpu_can_run() {
    let dir = TempDir::new("dispatch");
    let all = ["portable", "x86-64-v3", "x86-64-v4-ifma"];
    tree(dir.path(), &all, "breachcheck-server");
    let p = dir.path();
    let name = "breachcheck-server";
    let ifma = format!("{V3} {V4_IFMA}");
    assert_eq!(
        run(p, name, &ifma, None),
        (Some(0), "x86-64-v4-ifma serve --x".into())
    );
    // AVX-512 without IFMA (Skylake-X): the v3 build.
    let no_ifma = ifma.replace(" avx512ifma", "");
    assert_eq!(
        run(p, name, &no_ifma, None),
        (Some(0), "x86-64-v3 serve --x".into())
    );
    assert_eq!(
        run(p, name, V3, None),
        (Some(0), "x86-64-v3 serve --x".into())
    );
    // A flag's name inside another's is not the flag.
    assert_eq!(
        run(p, name, "avx2x bmi2", None),
        (Some(0), "portable serve --x".into())
    );
    assert_eq!(
        run(p, name, "", None),
        (Some(0), "portable serve --x".into())
    );
    assert_eq!(
        run(p, name, &ifma, Some("portable")),
        (Some(0), "portable serve --x".into())
    );
}

#[test]
fn a_missing_build_falls_back_or_fails_loudly() {
    let dir = TempDir::new("dispatch-missing");
    // Another architecture: only the portable build exists.
    tree(dir.path(), &["portable"], "breachcheck");
    let ifma = format!("{V3} {V4_IFMA}");
    assert_eq!(
        run(dir.path(), "breachcheck", &ifma, None),
        (Some(0), "portable serve --x".into())
    );
    let (code, out) = run(dir.path(), "breachcheck", &ifma, Some("x86-64-v3"));
    assert_eq!(code, Some(127));
    assert!(out.contains("no build"), "{out}");
}
