//! The web page (`serve --web`) driven in a real browser: Debian's
//! `chromium`, headless, through `playwright-core` from npm
//! (`tests/browser/page.mjs`). `scripts/test` installs both when they are
//! missing; a test that needs them fails with that instruction, it never
//! skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// One number to check on the page.
#[derive(Debug, Clone)]
pub struct PageCheck {
    /// What is typed.
    pub input: String,
    /// The region selected.
    pub region: String,
    /// A file name in the output directory for a screenshot after the check.
    pub screenshot: Option<String>,
}

/// What the page did.
#[derive(Debug, Clone)]
pub struct PageRun {
    /// The page loaded its WebAssembly and the index description.
    pub ready: bool,
    /// One per check, in order.
    pub results: Vec<PageResult>,
    /// Every request the page made.
    pub requests: Vec<PageRequest>,
    /// Console errors and page errors (a CSP violation shows here).
    pub console_errors: Vec<String>,
    /// `clientWorkMs(bench)` in the browser, if asked for.
    pub bench_ms: Option<f64>,
    /// The index id and key fingerprint the page shows.
    pub index_id: String,
    /// The key fingerprint the page shows.
    pub key_fingerprint: String,
}

/// What the page showed after one check.
#[derive(Debug, Clone)]
pub struct PageResult {
    /// The result section is visible.
    pub shown: bool,
    /// Its heading.
    pub verdict: String,
    /// The breaches listed.
    pub breaches: String,
    /// The privacy line.
    pub privacy: String,
    /// The error shown, if any.
    pub error: Option<String>,
    /// Milliseconds from the Enter key to the outcome on the page.
    pub ms: f64,
}

/// One request of the page.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// Its URL.
    pub url: String,
    /// GET, POST...
    pub method: String,
    /// Its body.
    pub body: Vec<u8>,
}

/// The directory of the driver and its `node_modules`.
pub fn driver_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Opens `url` in headless Chromium, runs `checks` by keyboard, and (with
/// `bench`) times the client's work per number over that many rounds.
/// Screenshots go to `out_dir`.
///
/// # Errors
///
/// Chromium or the driver missing (with what installs them), or the driver
/// failing.
pub fn drive(
    url: &str,
    out_dir: &Path,
    checks: &[PageCheck],
    bench: Option<u32>,
) -> anyhow::Result<PageRun> {
    let dir = driver_dir();
    if !dir.join("node_modules/playwright-core").is_dir() {
        bail!(
            "playwright-core is not installed in {}: run scripts/test (or `npm ci --prefix {}`)",
            dir.display(),
            dir.display()
        );
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        bail!("{chromium} is missing: run scripts/test (apt-get install chromium)");
    }
    let spec = serde_json::json!({
        "url": url,
        "outDir": out_dir,
        "checks": checks.iter().map(|c| serde_json::json!({
            "input": c.input, "region": c.region, "screenshot": c.screenshot,
        })).collect::<Vec<_>>(),
        "bench": bench,
    });
    let st = Command::new("node")
        .current_dir(&dir)
        .arg("page.mjs")
        .arg(spec.to_string())
        .env("CHROMIUM", &chromium)
        .status()
        .context("running node (is Node.js installed?)")?;
    let text = std::fs::read_to_string(out_dir.join("page.json"))
        .with_context(|| format!("the driver wrote no page.json (exit {st})"))?;
    let v: Value = serde_json::from_str(&text).context("page.json")?;
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Ok(PageRun {
        ready: v["ready"].as_bool().unwrap_or(false),
        results: v["results"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| PageResult {
                shown: r["shown"].as_bool().unwrap_or(false),
                verdict: s(&r["verdict"]),
                breaches: s(&r["breaches"]),
                privacy: s(&r["privacy"]),
                error: r["error"].as_str().map(str::to_owned),
                ms: r["ms"].as_f64().unwrap_or(0.0),
            })
            .collect(),
        requests: v["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| PageRequest {
                url: s(&r["url"]),
                method: s(&r["method"]),
                body: hex::decode(s(&r["body"])).unwrap_or_default(),
            })
            .collect(),
        console_errors: v["consoleErrors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect(),
        bench_ms: v["benchMs"].as_f64(),
        index_id: s(&v["info"]["indexId"]),
        key_fingerprint: s(&v["info"]["keyFingerprint"]),
    })
}
