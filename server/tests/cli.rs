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

fn keygen(dir: &std::path::Path, seed: &str) -> PathBuf {
    let k = dir.join("k.key");
    let st = bin()
        .args(["keygen", "--seed", seed, "--out"])
        .arg(&k)
        .status()
        .unwrap();
    assert!(st.success());
    k
}

/// `build-index KEY OUT INPUTS... EXTRA...` with `--json`.
fn build(
    key: &std::path::Path,
    out: &std::path::Path,
    inputs: &[&std::path::Path],
    extra: &[&str],
) -> std::process::Output {
    bin()
        .args(["build-index", "--json", "--breach", "t", "--key"])
        .arg(key)
        .arg("--out")
        .arg(out)
        .args(inputs)
        .args(extra)
        .output()
        .unwrap()
}

/// `n` distinct numbers, one per line.
fn numbers(n: u32) -> String {
    (0..n)
        .map(|i| format!("+86 139 {:04} {:04}\n", i / 10_000, i % 10_000))
        .collect()
}

// See: #10 (row 5)
/// A gzip bomb (256 MiB of NULs on one line, from about 260 KB) and a 100 MB
/// line: each is one `line_too_long` row, the build's peak memory stays far
/// below the line, and the summary does not grow with the input.
#[test]
fn a_gzip_bomb_and_a_100_mb_line_read_in_bounded_memory() {
    use flate2::{Compression, write::GzEncoder};
    let d = tmp("bomb");
    let k = keygen(&d, "05");
    let gz = |bytes: &[u8]| {
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    // Concatenated gzip members are one stream: one 256 MiB line of NULs
    // between two numbers.
    let zeros = gz(&vec![0u8; 1 << 20]);
    let mut bomb = gz(b"13800138000\n");
    for _ in 0..256 {
        bomb.extend_from_slice(&zeros);
    }
    bomb.extend_from_slice(&gz(b"\n13900139000\n"));
    std::fs::write(d.join("bomb.gz"), &bomb).unwrap();
    // 100 MB of digits on one line, and a row of letters under the cap.
    let mut long = b"13700137000\n".to_vec();
    long.resize(long.len() + 100_000_000, b'8');
    long.extend_from_slice(b"\n");
    long.extend(std::iter::repeat_n(b'x', 60_000));
    long.extend_from_slice(b"\n");
    std::fs::write(d.join("long.txt"), &long).unwrap();
    drop(long);
    let out = build(
        &k,
        &d.join("x.idx"),
        &[&d.join("bomb.gz"), &d.join("long.txt")],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.len() < 8192,
        "summary of {} bytes",
        out.stdout.len()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"]["rows"], 6);
    assert_eq!(v["rows"]["valid"], 3);
    assert_eq!(v["rows"]["invalid"]["line_too_long"], 2);
    assert_eq!(v["rows"]["invalid"]["letters"], 1);
    let sample = v["rows"]["samples"]["letters"][0].as_str().unwrap();
    assert!(sample.chars().count() <= 32, "{sample}");
    let peak = v["peak_memory_bytes"].as_u64().unwrap();
    eprintln!("peak memory: {peak} bytes");
    assert!(peak < 96 << 20, "peak memory {peak} bytes");
    let _ = std::fs::remove_dir_all(&d);
}

/// The names in `dir`, sorted.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Waits until `dir` holds an entry starting with `prefix` and returns it.
fn wait_for_entry(dir: &std::path::Path, prefix: &str, child: &mut std::process::Child) -> PathBuf {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(n) = names(dir).into_iter().find(|n| n.starts_with(prefix)) {
            return dir.join(n);
        }
        assert!(child.try_wait().unwrap().is_none(), "the build ended first");
        assert!(
            std::time::Instant::now() < deadline,
            "no {prefix}* in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
fn gen_corpus(dir: &std::path::Path, rows: u32) -> PathBuf {
    let dump = dir.join("dump.csv");
    assert!(
        bin()
            .args(["gen-corpus", "--count", &rows.to_string(), "--out"])
            .arg(&dump)
            .status()
            .unwrap()
            .success()
    );
    dump
}

// See: #10 (row 6)
/// SIGTERM during a build cleans up like Ctrl-C and exits 143 (128 + 15).
#[cfg(unix)]
#[test]
fn sigterm_during_a_build_removes_temporary_files_and_exits_143() {
    let d = tmp("sigterm");
    let k = keygen(&d, "06");
    let dump = gen_corpus(&d, 300_000);
    let mut child = bin()
        .args(["build-index", "--key"])
        .arg(&k)
        .arg("--out")
        .arg(d.join("x.idx"))
        .arg(&dump)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let work = wait_for_entry(&d, ".x.idx.build-", &mut child);
    assert_eq!(mode(&work), 0o700);
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted by SIGTERM"));
    assert_eq!(names(&d), ["dump.csv", "k.key"]);
    let _ = std::fs::remove_dir_all(&d);
}

// See: #10 (row 6)
/// `kill -9` while spilling leaves the work directory (0700, spill files
/// 0600); the next build removes it and the dead build's temporary index,
/// says so, and leaves alone what is not a build's.
#[cfg(unix)]
#[test]
fn kill_9_leaves_private_spill_files_that_the_next_build_removes() {
    let d = tmp("kill9");
    let k = keygen(&d, "07");
    let dump = gen_corpus(&d, 300_000);
    let mut child = bin()
        .args(["build-index", "--memory-limit", "1M", "--key"])
        .arg(&k)
        .arg("--out")
        .arg(d.join("x.idx"))
        .arg(&dump)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let work = wait_for_entry(&d, ".x.idx.build-", &mut child);
    let spill = wait_for_entry(&work, "raw-", &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(mode(&work), 0o700);
    assert_eq!(mode(&spill), 0o600);
    // What else a dead build may leave, and what is not a build's.
    let pid = child.id();
    std::fs::write(d.join(format!(".x.idx.tmp-{pid}")), b"partial").unwrap();
    std::fs::write(d.join(format!(".y.idx.tmp-{pid}")), b"not ours").unwrap();
    std::fs::create_dir(d.join(format!(".z.build-{pid}"))).unwrap();
    std::fs::write(d.join(format!(".z.build-{pid}/notes")), b"not ours").unwrap();
    let small = d.join("small.txt");
    std::fs::write(&small, numbers(300)).unwrap();
    let out = build(&k, &d.join("x.idx"), &[&small], &[]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("removed the work directory of an interrupted build")
            && err.contains("removed the temporary index of an interrupted build"),
        "{err}"
    );
    assert_eq!(
        names(&d),
        [
            format!(".y.idx.tmp-{pid}"),
            format!(".z.build-{pid}"),
            "dump.csv".into(),
            "k.key".into(),
            "small.txt".into(),
            "x.idx".into()
        ]
    );
    let _ = std::fs::remove_dir_all(&d);
}

// See: #10 (row 8)
/// A key file that others may read is refused by `build-index` and `serve`
/// with its mode and `chmod 600`, and loaded with a loud warning under
/// `--allow-insecure-key-mode`.
#[cfg(unix)]
#[test]
fn a_key_file_others_may_read_is_refused_unless_allowed() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    let d = tmp("keymode");
    let k = keygen(&d, "08");
    let dump = d.join("n.txt");
    std::fs::write(&dump, numbers(300)).unwrap();
    let idx = d.join("x.idx");
    assert!(build(&k, &idx, &[&dump], &[]).status.success());
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = |out: std::process::Output| {
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("mode 0644") && err.contains("chmod 600"),
            "{err}"
        );
    };
    refused(build(&k, &d.join("y.idx"), &[&dump], &[]));
    let serve = |extra: &[&str]| {
        let mut c = bin();
        c.args(["serve", "--listen", "127.0.0.1:0", "--index"])
            .arg(&idx)
            .arg("--key")
            .arg(&k)
            .args(extra);
        c
    };
    refused(serve(&[]).output().unwrap());
    let out = build(
        &k,
        &d.join("y.idx"),
        &[&dump],
        &["--allow-insecure-key-mode"],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("INSECURE"));
    let mut server = serve(&["--allow-insecure-key-mode"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    server.kill().unwrap();
    let out = server.wait_with_output().unwrap();
    assert!(
        line.starts_with("breachcheck-server listening on"),
        "{line:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("INSECURE"));
    let _ = std::fs::remove_dir_all(&d);
}

// See: #10 (row 9)
/// `--bucket-bits` that leaves fewer than 256 real entries per bucket on
/// average is refused, naming the average and the largest k allowed, unless
/// `--force-bucket-bits`.
#[test]
fn sparse_bucket_bits_are_refused_unless_forced() {
    let d = tmp("bucketbits");
    let k = keygen(&d, "09");
    let dump = d.join("n.txt");
    std::fs::write(&dump, numbers(2000)).unwrap();
    let out = build(&k, &d.join("x.idx"), &[&dump], &["--bucket-bits", "4"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("125.0 real entries per bucket")
            && err.contains("2000 valid rows")
            && err.contains("--bucket-bits 2 ")
            && err.contains("--force-bucket-bits"),
        "{err}"
    );
    assert!(!d.join("x.idx").exists());
    let forced = ["--bucket-bits", "4", "--force-bucket-bits"];
    assert!(
        build(&k, &d.join("x.idx"), &[&dump], &forced)
            .status
            .success()
    );
    assert!(
        build(&k, &d.join("y.idx"), &[&dump], &["--bucket-bits", "2"])
            .status
            .success()
    );
    // Repeated rows: the valid rows pass the early check, the distinct
    // numbers do not.
    let repeated = d.join("r.txt");
    std::fs::write(&repeated, numbers(400).repeat(5)).unwrap();
    let out = build(&k, &d.join("z.idx"), &[&repeated], &["--bucket-bits", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("200.0 real entries per bucket")
            && err.contains("400 distinct numbers")
            && err.contains("is --bucket-bits 0 "),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}
