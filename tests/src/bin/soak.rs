//! The abuse soak: `cargo run --release -p breachcheck-tests --bin soak --
//! [--secs 90] [--baseline-secs 10] [--clients 2] [--streams 30000]
//! [--idle 2000] [--only half_open,idle_sockets,...] [--attack-threads 1]
//! [--attacker-shares-cpu] [--hold-secs 0]
//! [-- serve flags...]`.
//!
//! Builds the release server first unless `--server PATH` names one, runs the
//! attacks of issue #10 against it on loopback for the given time while
//! legitimate clients check numbers, and prints the figures (server RSS
//! start/peak/end, server CPU, legitimate p50/p99 unloaded and under attack,
//! errors) as Markdown. Loopback only; bounded in time.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use breachcheck_tests::soak::{self, SoakOptions};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (ours, serve_args) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], args[i + 1..].to_vec()),
        None => (&args[..], Vec::new()),
    };
    let flag = |name: &str| {
        ours.iter()
            .position(|a| a == name)
            .and_then(|i| ours.get(i + 1))
            .cloned()
    };
    let num = |name: &str, default: u64| -> anyhow::Result<u64> {
        Ok(match flag(name) {
            Some(v) => v.parse().map_err(|e| anyhow::anyhow!("{name}: {e}"))?,
            None => default,
        })
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let server_bin = match flag("--server") {
        Some(p) => PathBuf::from(p),
        None => {
            eprintln!("soak: building the release server");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let st = Command::new(cargo)
                .current_dir(&root)
                .args(["build", "--release", "-p", "breachcheck-server"])
                .status()?;
            anyhow::ensure!(st.success(), "cargo build failed");
            root.join("target/release/breachcheck-server")
        }
    };
    let opts = SoakOptions {
        server_bin,
        baseline: Duration::from_secs(num("--baseline-secs", 10)?),
        attack: Duration::from_secs(num("--secs", 90)?),
        legit_clients: num("--clients", 2)? as usize,
        half_open_streams: num("--streams", 30_000)? as usize,
        idle_sockets: num("--idle", 2_000)? as usize,
        server_args: serve_args,
        only: flag("--only")
            .map(|v| v.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        hold: Duration::from_secs(num("--hold-secs", 0)?),
        attack_threads: num("--attack-threads", 1)? as usize,
        attacker_idle: !ours.iter().any(|a| a == "--attacker-shares-cpu"),
    };
    eprintln!(
        "soak: {} s baseline, {} s attack, {} legitimate clients",
        opts.baseline.as_secs(),
        opts.attack.as_secs(),
        opts.legit_clients
    );
    let report = soak::run(&opts)?;
    soak::print(&report)?;
    Ok(if report.legit_errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
