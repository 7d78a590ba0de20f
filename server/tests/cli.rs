//! The `breachcheck-server` binary's offline commands: keygen, apikey,
//! build-index from stdin, inspect --verify, and Ctrl-C during a build.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_breachcheck-server"))
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bcs-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn keygen_is_0600_refuses_overwrite_and_seeds_reproducibly() {
    let d = tmp("keygen");
    let k = d.join("a.key");
    let out = bin()
        .args(["keygen", "--seed", "abcd", "--out"])
        .arg(&k)
        .output()
        .unwrap();
    assert!(out.status.success());
    let first = String::from_utf8_lossy(&out.stdout).into_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let again = bin()
        .args(["keygen", "--seed", "abcd", "--out"])
        .arg(&k)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = bin()
        .args(["keygen", "--seed", "abcd", "--force", "--out"])
        .arg(&k)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&forced.stdout), first);
    // The secret never appears on stdout.
    let secret = std::fs::read_to_string(&k).unwrap();
    let secret_hex = secret.lines().nth(1).unwrap();
    assert!(!first.contains(secret_hex));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn apikey_new_prints_a_token_and_its_hash_entry() {
    let out = bin()
        .args(["apikey", "new", "--name", "acme"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let token = text
        .lines()
        .find(|l| l.trim().starts_with("bc_"))
        .unwrap()
        .trim();
    let hash = hex::encode(blake3::hash(token.as_bytes()).as_bytes());
    assert!(
        text.contains(&format!("token_blake3 = \"{hash}\"")),
        "{text}"
    );
    assert!(text.contains("name = \"acme\""));
}

#[test]
fn build_from_stdin_then_inspect_and_detect_corruption() {
    let d = tmp("stdin");
    let k = d.join("k.key");
    assert!(
        bin()
            .args(["keygen", "--seed", "01", "--out"])
            .arg(&k)
            .status()
            .unwrap()
            .success()
    );
    let idx = d.join("s.idx");
    let mut child = bin()
        .args(["build-index", "--json", "--breach", "stdin-leak", "--key"])
        .arg(&k)
        .arg("--out")
        .arg(&idx)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..500 {
            writeln!(stdin, "+86 139 {:04} {:04}", i, i * 3).unwrap();
        }
        writeln!(stdin, "garbage").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["distinct"], 500);
    assert_eq!(v["rows"]["invalid"]["letters"], 1);
    let ok = bin()
        .args(["inspect", "--verify"])
        .arg(&idx)
        .output()
        .unwrap();
    assert!(ok.status.success());
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        text.contains("body hash        OK") && text.contains("stdin-leak"),
        "{text}"
    );
    let mut bytes = std::fs::read(&idx).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xFF;
    std::fs::write(&idx, bytes).unwrap();
    let bad = bin()
        .args(["inspect", "--verify"])
        .arg(&idx)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("MISMATCH"));
    let _ = std::fs::remove_dir_all(&d);
}

#[cfg(unix)]
#[test]
fn ctrl_c_during_a_build_removes_temporary_files() {
    let d = tmp("sigint");
    let k = d.join("k.key");
    assert!(
        bin()
            .args(["keygen", "--seed", "02", "--out"])
            .arg(&k)
            .status()
            .unwrap()
            .success()
    );
    let dump = d.join("dump.csv");
    assert!(
        bin()
            .args(["gen-corpus", "--count", "300000", "--out"])
            .arg(&dump)
            .status()
            .unwrap()
            .success()
    );
    let mut child = bin()
        .args(["build-index", "--key"])
        .arg(&k)
        .arg("--out")
        .arg(d.join("x.idx"))
        .arg(&dump)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "build finished too early"
    );
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let mut left: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["dump.csv", "k.key"]);
    let _ = std::fs::remove_dir_all(&d);
}
