//! The operator path through the real binaries, as subprocesses on free
//! ports: keygen, gen-corpus, build-index, inspect, serve, breachcheck check;
//! and what happens around it: kill -9, SIGHUP, corrupt files, the demo.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

fn server_bin() -> PathBuf {
    binary("breachcheck-server")
}

fn client_bin() -> PathBuf {
    binary("breachcheck")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `serve` subprocess; killed on drop.
struct ServerProc {
    child: Child,
    addr: String,
}

impl ServerProc {
    fn start(index: &Path, key: &Path, listen: &str, extra: &[&str]) -> ServerProc {
        // Anonymous access with a quota large enough for the tests.
        let config = index.with_extension("toml");
        std::fs::write(
            &config,
            "allow_anonymous = true\n[anonymous]\nelements_per_second = 1e9\nburst = 100000000\nelements_per_day = 100000000\nbucket_bytes_per_day = 100000000000\nrequests_per_second = 1e9\nrequest_burst = 100000000\n",
        )
        .expect("config");
        let mut child = Command::new(server_bin())
            .args(["serve", "--listen", listen, "--config"])
            .arg(&config)
            .arg("--index")
            .arg(index)
            .arg("--key")
            .arg(key)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
        let addr = listening_addr(&mut child).to_string();
        ServerProc { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check_cmd(url: &str) -> Command {
    let mut c = Command::new(client_bin());
    c.args(["check", "--server", url]);
    c.env_remove("BREACHCHECK_API_KEY");
    c
}

/// keygen → gen-corpus → build-index → inspect → serve → breachcheck check.
#[test]
fn operator_path_through_the_real_binaries() {
    let dir = TempDir::new("operator");
    let key = dir.join("oprf.key");
    let out = ok(Command::new(server_bin())
        .args(["keygen", "--out"])
        .arg(&key));
    assert!(out.contains("fingerprint"));
    // keygen refuses to overwrite.
    assert!(
        !run(Command::new(server_bin())
            .args(["keygen", "--out"])
            .arg(&key))
        .status
        .success()
    );
    let dump = dir.join("dump.csv.gz");
    let plain = dir.join("dump.csv");
    ok(Command::new(server_bin())
        .args(["gen-corpus", "--count", "5000", "--seed", "3", "--out"])
        .arg(&plain)
        .arg("--members")
        .arg(dir.join("members.txt"))
        .arg("--non-members")
        .arg(dir.join("non.txt")));
    // Compress it, as dumps come.
    let gz = Command::new("gzip")
        .arg("-k")
        .arg(&plain)
        .status()
        .expect("gzip");
    assert!(gz.success());
    let index = dir.join("leak.idx");
    let summary = ok(Command::new(server_bin())
        .args(["build-index", "--json", "--breach", "weibo-2020", "--key"])
        .arg(&key)
        .arg("--out")
        .arg(&index)
        .arg(&dump));
    let report: serde_json::Value = serde_json::from_str(&summary).expect("json summary");
    assert_eq!(report["rows"]["rows"], 5000);
    let inspect = ok(Command::new(server_bin())
        .args(["inspect", "--verify", "--json"])
        .arg(&index));
    let inspect: serde_json::Value = serde_json::from_str(&inspect).expect("json");
    assert_eq!(inspect["verified"], true);
    assert_eq!(inspect["entry_count"], report["distinct"]);

    let server = ServerProc::start(&index, &key, "127.0.0.1:0", &[]);
    let members = std::fs::read_to_string(dir.join("members.txt")).expect("members");
    let non = std::fs::read_to_string(dir.join("non.txt")).expect("non");
    let mut query: Vec<&str> = members.lines().take(40).collect();
    query.extend(non.lines().take(40));
    query.push("not-a-number");
    std::fs::write(dir.join("q.txt"), query.join("\n")).expect("w");
    let out = run(check_cmd(&server.url())
        .args(["--format", "jsonl", "--file"])
        .arg(dir.join("q.txt")));
    assert_eq!(out.status.code(), Some(1), "found numbers exit 1");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl"))
        .collect();
    assert_eq!(rows.len(), 81);
    assert!(
        rows[..40]
            .iter()
            .all(|r| r["found"] == true && r["breaches"][0] == "weibo-2020")
    );
    assert!(
        rows[40..80]
            .iter()
            .all(|r| r["found"] == false && r["error"].is_null())
    );
    assert_eq!(rows[80]["error"], "contains letters");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("checked 81, found 40"), "{stderr}");
    assert!(stderr.contains("invalid number on line 81"), "{stderr}");
    // Only non-members: exit 0.
    let first_non = non.lines().next().expect("non-member");
    assert_eq!(
        run(check_cmd(&server.url()).arg(first_non)).status.code(),
        Some(0)
    );
    // Info.
    let info = ok(Command::new(client_bin()).args(["info", "--json", "--server", &server.url()]));
    let info: serde_json::Value = serde_json::from_str(&info).expect("json");
    assert_eq!(info["entry_count"], report["distinct"]);
}

/// `kill -9` in the middle of a build leaves no file at the target.
#[test]
fn kill_9_during_build_leaves_no_index() {
    let dir = TempDir::new("kill-build");
    let key = dir.join("k.key");
    ok(Command::new(server_bin())
        .args(["keygen", "--seed", "01", "--out"])
        .arg(&key));
    let dump = dir.join("big.csv");
    ok(Command::new(server_bin())
        .args(["gen-corpus", "--count", "400000", "--out"])
        .arg(&dump));
    let index = dir.join("big.idx");
    let mut child = Command::new(server_bin())
        .args(["build-index", "--key"])
        .arg(&key)
        .arg("--out")
        .arg(&index)
        .arg(&dump)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "build finished before the kill; make the corpus bigger"
    );
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    assert!(!index.exists(), "a partial index was left at the target");
    // Nothing under the target name; leftovers are hidden temporaries only.
    for e in std::fs::read_dir(dir.path()).expect("ls") {
        let name = e.expect("e").file_name().to_string_lossy().into_owned();
        assert!(
            name.starts_with('.') || ["k.key", "big.csv"].contains(&name.as_str()),
            "{name}"
        );
    }
}

/// `serve` refuses a corrupt index with a clear message and a non-zero exit.
#[test]
fn serve_refuses_a_corrupt_index() {
    let f = fixture();
    let dir = TempDir::new("corrupt-serve");
    let mut bytes = std::fs::read(&f.index).expect("read");
    let n = bytes.len();
    bytes[n - 10] ^= 0x10;
    let bad = dir.join("bad.idx");
    std::fs::write(&bad, &bytes).expect("w");
    let out = run(Command::new(server_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--index"])
        .arg(&bad)
        .arg("--key")
        .arg(&f.key));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad index file") && err.contains("corrupted"),
        "{err}"
    );
    // And a key that is not the index's.
    let other = dir.join("other.key");
    ok(Command::new(server_bin())
        .args(["keygen", "--seed", "77", "--out"])
        .arg(&other));
    let out = run(Command::new(server_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--index"])
        .arg(&f.index)
        .arg("--key")
        .arg(&other));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match"));
}

/// `kill -9` of the server in the middle of a large batch; a restart on the
/// same port; the client's retry completes the check.
#[test]
fn client_survives_kill_9_and_restart_of_the_server() {
    let f = fixture();
    let dir = TempDir::new("kill-serve");
    let mut server = ServerProc::start(&f.index, &f.key, "127.0.0.1:0", &[]);
    let addr = server.addr.clone();
    let mut batch: Vec<String> = f.non_members.iter().take(6000).cloned().collect();
    batch.extend(f.members.iter().take(3000).cloned());
    std::fs::write(dir.join("q.txt"), batch.join("\n")).expect("w");
    let client = check_cmd(&server.url())
        .args(["--format", "jsonl", "--concurrency", "1", "--file"])
        .arg(dir.join("q.txt"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client");
    std::thread::sleep(Duration::from_millis(700));
    server.child.kill().expect("kill -9");
    let _ = server.child.wait();
    std::thread::sleep(Duration::from_millis(300));
    let _restarted = ServerProc::start(&f.index, &f.key, &addr, &[]);
    let out = client.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"found\":true"))
        .count();
    assert_eq!(found, 3000);
}

/// SIGHUP swaps in a rebuilt index during a check; the check completes.
#[test]
fn sighup_reload_during_a_check() {
    let f = fixture();
    let dir = TempDir::new("hup");
    let index = dir.join("live.idx");
    std::fs::copy(&f.index, &index).expect("copy");
    let server = ServerProc::start(&index, &f.key, "127.0.0.1:0", &[]);
    let batch: Vec<String> = f.members.iter().take(6000).cloned().collect();
    std::fs::write(dir.join("q.txt"), batch.join("\n")).expect("w");
    let client = check_cmd(&server.url())
        .args(["--format", "csv", "--concurrency", "1", "--file"])
        .arg(dir.join("q.txt"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client");
    // Rebuild with another bucket layout (same key and numbers), rename over
    // the served file, then SIGHUP.
    let k = breachcheck_server::load_key(&f.key).expect("key");
    let tmp = dir.join("next.idx");
    breachcheck_server::build_index(&k, &tmp, &options(vec![f.dump.clone()], Some(3)))
        .expect("build");
    std::fs::rename(&tmp, &index).expect("rename");
    server.signal("-HUP");
    let out = client.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(",true,"))
        .count();
    assert_eq!(found, 6000);
    // After the reload the server presents the new index.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info =
            ok(Command::new(client_bin()).args(["info", "--json", "--server", &server.url()]));
        let info: serde_json::Value = serde_json::from_str(&info).expect("json");
        if info["bucket_bits"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "reload never took effect");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The demo builds its corpus, serves, and passes its own self-check.
#[test]
fn demo_runs_to_its_self_check() {
    let dir = TempDir::new("demo");
    let out = ok(Command::new(server_bin())
        .args([
            "demo",
            "--count",
            "3000",
            "--listen",
            "127.0.0.1:0",
            "--exit-after-check",
            "--cache-dir",
        ])
        .arg(dir.path()));
    assert!(out.contains("self-check passed"), "{out}");
    assert!(out.contains("FOUND"));
    // "Try it yourself" names the CLI already built beside the server, not
    // a cargo command that would compile it again (#11).
    let cli = client_bin().display().to_string();
    assert!(out.contains(&format!("  {cli} check --server ")), "{out}");
    assert!(!out.contains("cargo run"), "{out}");
    // The second run reuses the cached index.
    let out = run(Command::new(server_bin())
        .args([
            "demo",
            "--count",
            "3000",
            "--listen",
            "127.0.0.1:0",
            "--exit-after-check",
            "--cache-dir",
        ])
        .arg(dir.path()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reusing"));
}
