//! Index build and reader: formats, determinism, spill path, corruption,
//! labels, size.

use std::io::Write;

use breachcheck_server::{BreachMeta, BuildOptions, Index, InputSpec, ProgressMode, build_index};
use breachcheck_server::{IndexFault, ServerError, key_from_seed, save_key};

use crate::support::*;

fn numbers(n: usize) -> Vec<String> {
    let mut rng = breachcheck_server::SplitMix::new(99);
    (0..n)
        .map(|_| format!("+86{}", breachcheck_server::cn_mobile(&mut rng)))
        .collect()
}

fn build(opts: &BuildOptions, out: &std::path::Path) -> Vec<u8> {
    let k = key_from_seed("beef").expect("key");
    build_index(&k, out, opts).expect("build");
    std::fs::read(out).expect("read index")
}

/// Lines, CSV, TSV, gzip and zstd holding the same numbers in different
/// shapes build byte-identical indexes (which also shows determinism).
#[test]
fn every_input_format_builds_the_same_index() {
    let dir = TempDir::new("formats");
    let nums = numbers(2000);
    let national = |n: &str| n[3..].to_owned();
    let lines = dir.join("a.txt");
    std::fs::write(
        &lines,
        nums.iter().map(|n| format!("{n}\n")).collect::<String>(),
    )
    .expect("w");
    let csv = dir.join("b.csv");
    let mut body = String::from("id,name,mobile\n");
    for (i, n) in nums.iter().enumerate() {
        body.push_str(&format!("{i},\"Doe, J\",{}\n", national(n)));
    }
    std::fs::write(&csv, &body).expect("w");
    let tsv = dir.join("c.tsv");
    let mut body = String::from("phone\tuid\n");
    for (i, n) in nums.iter().enumerate() {
        body.push_str(&format!("0086{}\t{i}\n", national(n)));
    }
    std::fs::write(&tsv, &body).expect("w");
    let gz = dir.join("d.txt.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(std::fs::read(&lines).expect("r").as_slice())
        .expect("gz");
    std::fs::write(&gz, enc.finish().expect("gz")).expect("w");
    let zst = dir.join("e.csv.zst");
    std::fs::write(
        &zst,
        zstd::encode_all(std::fs::read(&csv).expect("r").as_slice(), 3).expect("zstd"),
    )
    .expect("w");
    // A CSV without a header row: its first row is data too.
    let bare = dir.join("f.csv");
    let mut body = String::new();
    for (i, n) in nums.iter().enumerate() {
        body.push_str(&format!("{i},{n}\n"));
    }
    std::fs::write(&bare, &body).expect("w");
    let mut outputs = Vec::new();
    for (i, input) in [lines, csv, tsv, gz, zst, bare].into_iter().enumerate() {
        let out = dir.join(&format!("{i}.idx"));
        outputs.push(build(&options(vec![input], Some(3)), &out));
    }
    for o in &outputs[1..] {
        assert!(o == &outputs[0], "formats gave different indexes");
    }
    // Several inputs at once de-duplicate into the same set.
    let both = build(
        &options(vec![dir.join("a.txt"), dir.join("b.csv")], Some(3)),
        &dir.join("both.idx"),
    );
    assert!(both == outputs[0]);
}

#[test]
fn invalid_rows_are_counted_by_reason_and_masked() {
    let dir = TempDir::new("invalid");
    let input = dir.join("dump.txt");
    std::fs::write(
        &input,
        "13800138000\nhello\n12345\n\n+999 123 4567\n13800138000\n138001380001\n+8613900139000\n",
    )
    .expect("w");
    let k = key_from_seed("beef").expect("key");
    let r = build_index(&k, &dir.join("x.idx"), &options(vec![input], None)).expect("build");
    assert_eq!(r.rows.rows, 8);
    assert_eq!(r.rows.valid, 3);
    assert_eq!(r.distinct, 2);
    assert_eq!(r.duplicates_merged, 1);
    assert_eq!(r.rows.invalid.get("letters"), Some(&1));
    assert_eq!(r.rows.invalid.get("too_short"), Some(&1));
    assert_eq!(r.rows.invalid.get("empty"), Some(&1));
    assert_eq!(r.rows.invalid.get("unknown_country_code"), Some(&1));
    assert_eq!(r.rows.invalid.get("too_long"), Some(&1));
    let samples = serde_json::to_string(&r.rows.samples).expect("json");
    assert!(
        !samples.contains("138001380001"),
        "samples must be masked: {samples}"
    );
}

/// Forcing the out-of-memory partition path gives the same file.
#[test]
fn spill_path_matches_in_memory_path() {
    let dir = TempDir::new("spill");
    let input = dir.join("n.txt");
    std::fs::write(&input, numbers(3000).join("\n")).expect("w");
    let mut small = options(vec![input.clone()], None);
    small.memory_limit = 16 << 10;
    let k = key_from_seed("beef").expect("key");
    let r = build_index(&k, &dir.join("small.idx"), &small).expect("build");
    assert!(r.spilled);
    let big = build(&options(vec![input], None), &dir.join("big.idx"));
    assert!(std::fs::read(dir.join("small.idx")).expect("r") == big);
    // Nothing is left behind in the directory but the two indexes and input.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["big.idx", "n.txt", "small.idx"]);
}

/// A corrupt byte, a truncated file, trailing bytes and a wrong key are each
/// refused with their own error.
#[test]
fn corruption_truncation_and_wrong_key_have_distinct_errors() {
    let f = fixture();
    let good = std::fs::read(&f.index).expect("read");
    let dir = TempDir::new("corrupt");
    let fault = |bytes: &[u8]| -> IndexFault {
        let p = dir.join("bad.idx");
        std::fs::write(&p, bytes).expect("w");
        match Index::open(&p).and_then(|i| i.verify()) {
            Err(ServerError::BadIndexFile { reason, .. }) => reason,
            other => panic!("expected a bad index error, got {other:?}"),
        }
    };
    assert_eq!(fault(&good[..good.len() - 1]), IndexFault::Truncated);
    assert_eq!(fault(&good[..100]), IndexFault::Truncated);
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(fault(&longer), IndexFault::TrailingBytes);
    let mut magic = good.clone();
    magic[0] = b'X';
    assert_eq!(fault(&magic), IndexFault::WrongMagic);
    let mut version = good.clone();
    version[8] = 9;
    assert_eq!(fault(&version), IndexFault::UnsupportedVersion(9));
    let mut header = good.clone();
    header[45] ^= 1;
    assert_eq!(fault(&header), IndexFault::HeaderChecksum);
    let idx = Index::open(&f.index).expect("open");
    let first_payload = good.len() - idx.header().body_len() as usize;
    let mut payload = good.clone();
    payload[first_payload + 20] ^= 1;
    assert_eq!(fault(&payload), IndexFault::BodyChecksum);
    let mut payload = good.clone();
    let last = payload.len() - 7;
    payload[last] ^= 0x40;
    assert_eq!(fault(&payload), IndexFault::BodyChecksum);
    let other = key_from_seed("0ff0").expect("key");
    assert!(matches!(
        Index::open_with_key(&f.index, &other),
        Err(ServerError::KeyMismatch { .. })
    ));
}

#[test]
fn empty_and_missing_files_are_clear_errors() {
    let dir = TempDir::new("empty");
    std::fs::write(dir.join("e.idx"), b"").expect("w");
    assert!(matches!(
        Index::open(&dir.join("e.idx")),
        Err(ServerError::BadIndexFile {
            reason: IndexFault::Truncated,
            ..
        })
    ));
    assert!(matches!(
        Index::open(&dir.join("missing.idx")),
        Err(ServerError::Io { .. })
    ));
    let k = key_from_seed("beef").expect("key");
    let r = build_index(
        &k,
        &dir.join("x.idx"),
        &options(vec![dir.join("missing.csv")], None),
    );
    assert!(matches!(r, Err(ServerError::Io { .. })));
    assert!(!dir.join("x.idx").exists());
}

/// A number in two breaches becomes one entry labelled with both; the client
/// decrypts the label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_multi_breach_index() {
    let dir = TempDir::new("labels");
    let nums = numbers(600);
    let (a, b) = (dir.join("weibo.txt"), dir.join("fb.txt"));
    std::fs::write(&a, nums[..400].join("\n")).expect("w");
    std::fs::write(&b, nums[300..].join("\n")).expect("w");
    let meta = |id: &str| BreachMeta {
        id: id.into(),
        name: id.into(),
        ..Default::default()
    };
    let opts = BuildOptions {
        inputs: vec![
            InputSpec { path: a, breach: 0 },
            InputSpec { path: b, breach: 1 },
        ],
        breaches: vec![meta("weibo-2020"), meta("facebook-2021")],
        default_region: breachcheck_proto::Region::parse("CN"),
        column: None,
        bucket_bits: Some(2),
        force_bucket_bits: true,
        pir: false,
        memory_limit: 1 << 30,
        temp_dir: None,
        progress: ProgressMode::Quiet,
    };
    let k = key_from_seed("beef").expect("key");
    let key_path = dir.join("k.key");
    save_key(&key_path, &k, false).expect("key");
    let r = build_index(&k, &dir.join("l.idx"), &opts).expect("build");
    assert_eq!(r.distinct, 600);
    let server = start(&dir.join("l.idx"), &key_path, open_config()).await;
    let c = client(&server.url()).await;
    let res = c
        .check([&nums[0], &nums[350], &nums[599]])
        .await
        .expect("check");
    let ids = |i: usize| {
        res[i]
            .breaches
            .iter()
            .map(|b| b.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(0), ["weibo-2020"]);
    assert_eq!(ids(1), ["weibo-2020", "facebook-2021"]);
    assert_eq!(ids(2), ["facebook-2021"]);
    server.stop().await;
}

/// The automatic layout stays under 4.5 bytes per entry without labels.
#[test]
fn automatic_layout_is_under_4_5_bytes_per_entry() {
    let dir = TempDir::new("size");
    let input = dir.join("n.txt");
    std::fs::write(&input, numbers(40_000).join("\n")).expect("w");
    let k = key_from_seed("beef").expect("key");
    let r = build_index(&k, &dir.join("s.idx"), &options(vec![input], None)).expect("build");
    assert!(
        r.bytes_per_entry <= 4.5,
        "{} bytes per entry",
        r.bytes_per_entry
    );
    // Every bucket's payload has the same length and entry count.
    let idx = Index::open(&dir.join("s.idx")).expect("open");
    let lens: std::collections::BTreeSet<usize> = (0..idx.header().bucket_count() as u32)
        .map(|b| idx.bucket(b).expect("payload").len())
        .collect();
    assert_eq!(lens.len(), 1);
}

/// Rows that are not UTF-8 are invalid rows; the build goes on (lines and CSV).
#[test]
fn non_utf8_rows_never_abort_a_build() {
    let dir = TempDir::new("utf8");
    let lines = dir.join("l.txt");
    std::fs::write(&lines, b"13800138000\n\xff\xfe\x80138\n13900139000\n").expect("w");
    let csv = dir.join("c.csv");
    std::fs::write(
        &csv,
        b"uid,phone\n1,13800138000\n2,\xff13900\n3,13700137000\n",
    )
    .expect("w");
    let k = key_from_seed("beef").expect("key");
    let r = build_index(&k, &dir.join("l.idx"), &options(vec![lines], None)).expect("lines build");
    assert_eq!((r.rows.rows, r.rows.valid), (3, 2));
    let r = build_index(&k, &dir.join("c.idx"), &options(vec![csv], None)).expect("csv build");
    assert_eq!((r.rows.rows, r.rows.valid), (3, 2));
}
