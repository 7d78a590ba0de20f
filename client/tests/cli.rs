//! The real `breachcheck` binary against a real server on 127.0.0.1: exit
//! codes 0, 1 and 2, and every output format.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use breachcheck_server::{
    AppState, BreachMeta, BuildOptions, Config, InputSpec, ProgressMode, Quota, Served,
    build_index, key_from_seed, save_key,
};

const MEMBERS: [&str; 3] = ["+8613800138000", "+8615912345678", "+14155552671"];

struct Server {
    url: String,
    _dir: PathBuf,
}

/// One server for the whole file, on its own runtime thread.
fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("breachcheck-cli-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dump = dir.join("dump.txt");
        let mut lines: Vec<String> = MEMBERS.iter().map(|s| s.to_string()).collect();
        lines.extend((0..500).map(|i| format!("+86137{i:08}")));
        std::fs::write(&dump, lines.join("\n")).unwrap();
        let k = key_from_seed("c1").unwrap();
        let key_path = dir.join("k.key");
        save_key(&key_path, &k, true).unwrap();
        let index = dir.join("i.idx");
        let opts = BuildOptions {
            inputs: vec![InputSpec {
                path: dump,
                breach: 0,
            }],
            breaches: vec![BreachMeta {
                id: "test-leak".into(),
                name: "Test leak".into(),
                ..Default::default()
            }],
            default_region: breachcheck_proto::Region::parse("CN"),
            column: None,
            bucket_bits: Some(2),
            force_bucket_bits: true,
            pir: false,
            memory_limit: 1 << 28,
            temp_dir: None,
            progress: ProgressMode::Quiet,
        };
        build_index(&k, &index, &opts).unwrap();
        let served = Served::load(&index, &key_path).unwrap();
        let config = Config {
            allow_anonymous: true,
            anonymous: Quota {
                elements_per_second: 1e9,
                burst: 1 << 30,
                elements_per_day: 1 << 30,
                bucket_bytes_per_day: 1 << 40,
                pir_answers_per_day: 1000,
                requests_per_second: 1e9,
                request_burst: 1 << 30,
            },
            ..Config::default()
        };
        let state = Arc::new(AppState::new(served, config).unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                breachcheck_server::serve(listener, state, None, std::future::pending())
                    .await
                    .unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        Server {
            url: format!("http://{addr}"),
            _dir: dir,
        }
    })
}

fn breachcheck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_breachcheck"))
        .args(args)
        .env_remove("BREACHCHECK_SERVER")
        .env_remove("BREACHCHECK_API_KEY")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn exit_code_1_when_a_number_is_found() {
    let s = server();
    let o = breachcheck(&[
        "check",
        "--server",
        &s.url,
        "+86 138 0013 8000",
        "13900000001",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = stdout(&o);
    assert!(out.contains("FOUND") && out.contains("test-leak"), "{out}");
    assert!(out.contains("not found"));
}

#[test]
fn exit_code_0_when_none_is_found() {
    let s = server();
    let o = breachcheck(&["check", "--server", &s.url, "13900000001", "13900000002"]);
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("checked 2, found 0"), "{err}");
    assert!(err.contains("privacy:"), "{err}");
}

#[test]
fn exit_code_2_on_errors() {
    // Unreachable server.
    let o = breachcheck(&["check", "--server", "http://127.0.0.1:1", "13800138000"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the server"));
    // Wrong pinned key.
    let s = server();
    let o = breachcheck(&[
        "check",
        "--server",
        &s.url,
        "--pin-key",
        &"11".repeat(32),
        "13800138000",
    ]);
    assert_eq!(o.status.code(), Some(2));
    // No numbers at all.
    let o = breachcheck(&["check", "--server", &s.url]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn jsonl_has_one_object_per_input_in_order() {
    let s = server();
    let o = breachcheck(&[
        "check",
        "--server",
        &s.url,
        "--format",
        "jsonl",
        "13800138000",
        "oops",
        "+1 (415) 555-2671",
        "13900000001",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    // The documented key order: input, number, found, breaches, error.
    let first = stdout(&o).lines().next().unwrap().to_owned();
    assert!(first.starts_with("{\"input\":\"13800138000\",\"number\":\"+8613800138000\",\"found\":true,\"breaches\":[\"test-leak\"],\"error\":null}"), "{first}");
    for r in &rows {
        let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["breaches", "error", "found", "input", "number"]);
    }
    assert_eq!(rows[0]["number"], "+8613800138000");
    assert_eq!(rows[0]["found"], true);
    assert_eq!(rows[0]["breaches"], serde_json::json!(["test-leak"]));
    assert_eq!(rows[1]["error"], "contains letters");
    assert_eq!(rows[1]["number"], serde_json::Value::Null);
    assert_eq!(rows[2]["found"], true);
    assert_eq!(rows[3]["found"], false);
    assert_eq!(rows[3]["error"], serde_json::Value::Null);
}

#[test]
fn csv_has_a_header_and_the_same_columns() {
    let s = server();
    let o = breachcheck(&[
        "check",
        "--server",
        &s.url,
        "--format",
        "csv",
        "13800138000",
        "13900000001",
    ]);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "input,number,found,breaches,error");
    assert_eq!(lines[1], "13800138000,+8613800138000,true,test-leak,");
    assert_eq!(lines[2], "13900000001,+8613900000001,false,,");
}

#[test]
fn file_input_reports_invalid_lines_and_info_describes_the_index() {
    let s = server();
    let dir = std::env::temp_dir().join(format!("breachcheck-cli-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("numbers.txt");
    std::fs::write(&f, "13800138000\n\nabc\n15912345678\n").unwrap();
    let o = breachcheck(&[
        "check",
        "--server",
        &s.url,
        "--prefix-bits",
        "0",
        "--file",
        f.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("invalid number on line 2: empty"), "{err}");
    assert!(
        err.contains("invalid number on line 3: contains letters"),
        "{err}"
    );
    assert!(err.contains("server learned nothing"), "{err}");
    let o = breachcheck(&["info", "--server", &s.url, "--json"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["entry_count"], 503);
    assert_eq!(v["breaches"][0]["id"], "test-leak");
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

/// A line that is not UTF-8 is an invalid row, not the end of the input.
#[test]
fn non_utf8_lines_do_not_end_the_input() {
    let s = server();
    let dir = std::env::temp_dir().join(format!("breachcheck-cli-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("numbers.txt");
    std::fs::write(&f, b"13900000001\n\xff\xfe138\n13800138000\n").unwrap();
    let o = breachcheck(&[
        "check",
        "--server",
        &s.url,
        "--format",
        "jsonl",
        "--file",
        f.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert!(rows[1]["error"].is_string());
    assert_eq!(rows[2]["found"], true);
    let _ = std::fs::remove_dir_all(&dir);
}

fn rows(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check_file(name: &str, bytes: &[u8]) -> Output {
    let s = server();
    let dir = std::env::temp_dir().join(format!("breachcheck-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("numbers.txt");
    std::fs::write(&f, bytes).unwrap();
    let o = breachcheck(&[
        "check",
        "--server",
        &s.url,
        "--format",
        "jsonl",
        "--file",
        f.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    o
}

// See: #11
/// A UTF-8 byte-order mark does not swallow the first number.
#[test]
fn a_utf8_bom_does_not_drop_the_first_number() {
    let o = check_file("bom", b"\xEF\xBB\xBF13800138000\n13900000001\n");
    let r = rows(&o);
    assert_eq!(r.len(), 2, "{}", stdout(&o));
    assert_eq!(r[0]["number"], "+8613800138000");
    assert_eq!(r[0]["found"], true);
    assert_eq!(o.status.code(), Some(1));
}

// See: #11
/// UTF-16 files (little-endian with a BOM, big-endian without) are read.
#[test]
fn utf16_files_are_read() {
    let text = "13800138000\r\n+1 (415) 555-2671\r\n13900000001\r\n";
    let mut le = vec![0xFF, 0xFE];
    le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    for (name, bytes) in [("utf16le", le), ("utf16be", be)] {
        let o = check_file(name, &bytes);
        let r = rows(&o);
        assert_eq!(r.len(), 3, "{name}: {}", stdout(&o));
        assert_eq!(r[0]["found"], true, "{name}");
        assert_eq!(r[1]["number"], "+14155552671", "{name}");
        assert_eq!(r[2]["found"], false, "{name}");
    }
}

// See: #11
/// Zero-width characters, full-width brackets and a written-out trunk
/// prefix `(0)` are numbers, not invalid rows.
#[test]
fn invisible_and_full_width_characters_and_trunk_zero_parse() {
    let input = "138\u{200B}0013\u{200D}8000\n\
                 \u{FEFF}+86 138 0013 8000\n\
                 （86）138 0013 8000\n\
                 +44 (0)20 7946 0000\n\
                 +86 (0)10 6552 9988\n";
    let o = check_file("messy", input.as_bytes());
    let r = rows(&o);
    assert_eq!(r.len(), 5, "{}", stdout(&o));
    for row in &r[..3] {
        assert_eq!(row["number"], "+8613800138000", "{row}");
        assert_eq!(row["found"], true, "{row}");
    }
    assert_eq!(r[3]["number"], "+442079460000");
    assert_eq!(r[4]["number"], "+861065529988");
    assert!(r.iter().all(|row| row["error"].is_null()), "{}", stdout(&o));
}

// See: #11
/// An input that is not a number was not checked: `found` is null in JSON
/// Lines and empty in CSV, never `false`.
#[test]
fn found_is_null_for_invalid_inputs() {
    let s = server();
    let o = breachcheck(&[
        "check",
        "--server",
        &s.url,
        "--format",
        "jsonl",
        "oops",
        "13900000001",
    ]);
    let r = rows(&o);
    assert_eq!(r[0]["found"], serde_json::Value::Null);
    assert_eq!(r[0]["error"], "contains letters");
    assert_eq!(r[1]["found"], false);
    let o = breachcheck(&[
        "check",
        "--server",
        &s.url,
        "--format",
        "csv",
        "oops",
        "13900000001",
    ]);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[1], "oops,,,,contains letters");
    assert_eq!(lines[2], "13900000001,+8613900000001,false,,");
}

// See: #11
/// The summary names the key and the index the answers are under, and the
/// prefix bits actually sent.
#[test]
fn the_summary_names_the_key_the_index_and_the_bits_used() {
    let s = server();
    let o = breachcheck(&[
        "check",
        "--server",
        &s.url,
        "--prefix-bits",
        "2",
        "13900000001",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("\nkey "), "{err}");
    assert!(err.contains("\nindex "), "{err}");
    assert!(err.contains("learned 2 bits"), "{err}");
}
