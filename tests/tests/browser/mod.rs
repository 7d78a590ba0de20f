//! The private check in a real browser (#14): `breachcheck-server serve
//! --web` (the real binary) and its embedded page, driven in Debian's
//! headless Chromium through playwright-core (`tests/browser/page.mjs`;
//! `scripts/test` installs both). The page runs the WebAssembly client core:
//! the number is blinded in the browser, and the test reads every byte the
//! page sent to show it never left.
//!
//! Beside them, the grpc-web and CORS surface over raw HTTP/1.1, and the
//! anonymous quota per client address (behind a trusted proxy or not).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use breachcheck_proto::pb::{self, EvaluateRequest};
use breachcheck_proto::{Mode, ServerKey};
use breachcheck_server::Service;
use breachcheck_tests::browser::{PageCheck, PageRun, drive};
use tonic::{Request, Response, Status};

use crate::scale::Replica;
use crate::support::*;

/// A config for a public page: anonymous access with a quota a few checks
/// fit in.
fn web_config(dir: &TempDir, extra: &str) -> std::path::PathBuf {
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        format!(
            "allow_anonymous = true\nmax_batch = 64\n{extra}\n[anonymous]\n\
             elements_per_second = 100.0\nburst = 1000\nelements_per_day = 100000\n\
             bucket_bytes_per_day = 100000000\nrequests_per_second = 100.0\nrequest_burst = 100\n"
        ),
    )
    .expect("config");
    path
}

fn check(input: &str, screenshot: Option<&str>) -> PageCheck {
    PageCheck {
        input: input.into(),
        region: "CN".into(),
        screenshot: screenshot.map(str::to_owned),
    }
}

/// The page's run, failing the test with the driver's complaint.
fn run(url: &str, dir: &TempDir, checks: &[PageCheck]) -> PageRun {
    let run = drive(url, dir.path(), checks, None).expect("drive the page in Chromium");
    assert!(
        run.ready,
        "the page never became ready: {:?}",
        run.console_errors
    );
    run
}

/// See: #14. A leaked number typed in its national form is FOUND with its
/// breach, a clean one is not; the page states what the server learned;
/// the page made no request outside its server, called only the three
/// RPCs, and no request body holds either number in any form; the server's
/// metrics saw only those RPCs. A screenshot is kept in the test's temp dir
/// (printed).
#[test]
fn the_page_checks_privately_in_chromium() {
    let f = fixture();
    let dir = TempDir::new("browser");
    let config = web_config(&dir, "");
    let server = Replica::start(&config, &f.index, Some(&f.key), &["--web"]);
    let leaked = &f.members[3];
    let clean = &f.non_members[5];
    let national = leaked.trim_start_matches("+86").to_owned();
    let shot = "found.png";
    let run = run(
        &format!("{}/", server.url()),
        &dir,
        &[
            check(&national, Some(shot)),
            check(clean, Some("clean.png")),
        ],
    );
    assert!(run.console_errors.is_empty(), "{:?}", run.console_errors);
    let (found, not_found) = (&run.results[0], &run.results[1]);
    assert!(found.shown && found.error.is_none(), "{found:?}");
    assert_eq!(found.verdict, format!("{leaked} is in the leaked data"));
    assert!(
        found.breaches.contains("Synthetic Weibo-like dump")
            && found.breaches.contains("phone numbers"),
        "{found:?}"
    );
    assert!(
        not_found.shown && not_found.error.is_none(),
        "{not_found:?}"
    );
    assert_eq!(
        not_found.verdict,
        format!("{clean} was not found in the leaked data")
    );
    // The fixture has k = 4: one 4-bit prefix per check.
    assert!(
        found.privacy.contains("the server learned 4 bits"),
        "{}",
        found.privacy
    );
    // What the page shows to compare out of band is the server's.
    let info = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async { client(&server.url()).await.info() });
    assert_eq!(run.index_id, hex::encode(&info.index_id));

    // Every request: this server only; GETs of the page's files, POSTs of
    // the three RPCs; no body holds a number.
    let origin = server.url();
    let mut rpcs = Vec::new();
    for r in &run.requests {
        let path = r
            .url
            .strip_prefix(&origin)
            .unwrap_or_else(|| panic!("a request left the server: {}", r.url));
        match r.method.as_str() {
            "GET" => assert!(
                [
                    "/",
                    "/app.js",
                    "/style.css",
                    "/favicon.svg",
                    "/breachcheck_web.js",
                    "/breachcheck_web_bg.wasm"
                ]
                .contains(&path),
                "unexpected GET {path}"
            ),
            "POST" => rpcs.push(
                path.strip_prefix("/breachcheck.v1.BreachCheck/")
                    .unwrap_or_else(|| panic!("unexpected POST {path}"))
                    .to_owned(),
            ),
            m => panic!("unexpected {m} {path}"),
        }
        for number in [
            leaked.as_str(),
            &national,
            clean,
            clean.trim_start_matches("+86"),
        ] {
            let utf16: Vec<u8> = number.encode_utf16().flat_map(u16::to_le_bytes).collect();
            for needle in [number.as_bytes(), &utf16[..]] {
                assert!(
                    !r.body.windows(needle.len()).any(|w| w == needle),
                    "the number crossed the wire in {path}"
                );
            }
        }
    }
    for rpc in ["GetIndexInfo", "Evaluate", "GetBuckets"] {
        assert!(rpcs.iter().any(|r| r == rpc), "{rpc} not called: {rpcs:?}");
    }
    assert!(
        rpcs.iter()
            .all(|r| ["GetIndexInfo", "Evaluate", "GetBuckets"].contains(&r.as_str()))
    );
    // The server saw exactly the two checks' calls, nothing else.
    let metric = |rpc: &str| {
        server.metric(&format!(
            "breachcheck_requests_total{{rpc=\"{rpc}\",code=\"OK\"}}"
        ))
    };
    assert_eq!(metric("Evaluate"), 2);
    assert_eq!(metric("GetBuckets"), 2);
    let text = server.scrape();
    for line in text
        .lines()
        .filter(|l| l.starts_with("breachcheck_requests_total{"))
    {
        assert!(
            ["GetIndexInfo", "Evaluate", "GetBuckets"]
                .iter()
                .any(|rpc| line.contains(&format!("rpc=\"{rpc}\",code=\"OK\""))),
            "the server saw another call: {line}"
        );
    }
    let shot = dir.join(shot);
    assert!(
        std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false),
        "no screenshot"
    );
    eprintln!("screenshot: {}", shot.display());
    // Kept for a look after the run (the temp dir goes with the test).
    let keep = std::env::temp_dir().join("breachcheck-page-found.png");
    let _ = std::fs::copy(&shot, keep);
}

/// See: #14. Opened with `#key=` naming another key, the page refuses the
/// server before anything is checked: an error, not "not found".
#[test]
fn a_pinned_key_that_is_not_the_servers_is_an_error_on_the_page() {
    let f = fixture();
    let dir = TempDir::new("browser-pin");
    let config = web_config(&dir, "");
    let server = Replica::start(&config, &f.index, Some(&f.key), &["--web"]);
    let other = ServerKey::random(Mode::Voprf, &mut rand::rng());
    let url = format!(
        "{}/#key={}",
        server.url(),
        hex::encode(other.public_key().to_bytes())
    );
    let run = drive(&url, dir.path(), &[check(&f.members[0], None)], None).expect("drive");
    let r = &run.results[0];
    assert!(!r.shown, "{r:?}");
    let e = r.error.as_deref().unwrap_or_default();
    assert!(
        e.contains("is not the pinned key") && e.contains("not a \"not found\""),
        "{e}"
    );
}

/// See: #14. A server answering under another key than the one it
/// advertises: the page's proof check fails and it shows an error, for a
/// leaked number and a clean one alike, never a verdict.
#[test]
fn a_server_answering_under_another_key_makes_the_page_show_an_error() {
    let f = fixture();
    let dir = TempDir::new("browser-liar");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt.block_on(CustomServer::start_web(crate::Liar {
        inner: fixture_service(),
        lie: crate::Lie::OtherKey,
        other: ServerKey::random(Mode::Voprf, &mut rand::rng()),
    }));
    let run = drive(
        &format!("{}/", server.url()),
        dir.path(),
        &[
            check(&f.members[1], Some("liar.png")),
            check(&f.non_members[1], None),
        ],
        None,
    )
    .expect("drive");
    assert!(run.ready, "{:?}", run.console_errors);
    for r in &run.results {
        assert!(!r.shown, "a verdict from a lying server: {r:?}");
        let e = r.error.as_deref().unwrap_or_default();
        assert!(e.contains("proof verification failed"), "{e}");
    }
    rt.block_on(server.stop());
}

/// A server that shows one index while the page loads, then answers from
/// another (its own key, layout and buckets, all consistent).
struct Switching {
    first: Service,
    then: Service,
    infos: std::sync::atomic::AtomicUsize,
}

#[tonic::async_trait]
impl Twist for Switching {
    fn honest(&self) -> &Service {
        &self.then
    }

    async fn get_index_info(
        &self,
        r: Request<pb::GetIndexInfoRequest>,
    ) -> Result<Response<pb::IndexInfo>, Status> {
        use breachcheck_proto::pb::breach_check_server::BreachCheck as _;
        if self.infos.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            self.first.get_index_info(r).await
        } else {
            self.then.get_index_info(r).await
        }
    }
}

/// See: #14. The index id and key the page shows at load are the ones its
/// checks run under: a server that switches to another (consistent) index
/// and key after the page loaded is refused, not believed.
#[test]
fn a_server_switching_index_after_the_page_loaded_is_refused() {
    let f = fixture();
    let other = make_fixture("browser-other", 2_000, "07e4", Some(4));
    let load = |fx: &Fixture| {
        let served = breachcheck_server::Served::load(&fx.index, &fx.key).expect("load");
        Service::new(std::sync::Arc::new(
            breachcheck_server::AppState::new(served, open_config()).expect("state"),
        ))
    };
    let dir = TempDir::new("browser-switch");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt.block_on(CustomServer::start_web(Switching {
        first: load(f),
        then: load(&other),
        infos: std::sync::atomic::AtomicUsize::new(0),
    }));
    let run = drive(
        &format!("{}/", server.url()),
        dir.path(),
        &[check(&other.members[0], None)],
        None,
    )
    .expect("drive");
    assert!(run.ready, "{:?}", run.console_errors);
    let r = &run.results[0];
    assert!(!r.shown, "a verdict from a switched index: {r:?}");
    let e = r.error.as_deref().unwrap_or_default();
    assert!(e.contains("is not the pinned key"), "{e}");
    rt.block_on(server.stop());
}

// --- grpc-web and CORS over raw HTTP/1.1 ---------------------------------------

/// One HTTP/1.1 exchange; the whole answer as text (headers and body, lossy).
fn http1(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A grpc-web GetIndexInfo request over HTTP/1.1, with extra headers.
fn grpc_web_info(extra: &str) -> Vec<u8> {
    let mut r = format!(
        "POST /breachcheck.v1.BreachCheck/GetIndexInfo HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n{extra}\
         Content-Length: 5\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    r.extend_from_slice(&[0, 0, 0, 0, 0]);
    r
}

/// See: #14. `--web` serves the page with its strict policy and grpc-web on
/// the gRPC port; without `--web` neither answers (HTTP/1.1 is refused);
/// CORS answers only the configured origins.
#[test]
fn grpc_web_and_the_page_are_served_only_with_web_and_cors_only_for_configured_origins() {
    let f = fixture();
    let dir = TempDir::new("grpc-web");
    let plain = Replica::start(&web_config(&dir, ""), &f.index, Some(&f.key), &[]);
    let page = http1(
        plain.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(!page.contains("200 OK"), "{page}");

    let dir2 = TempDir::new("grpc-web-cors");
    let web = Replica::start(
        &web_config(&dir2, "cors_origins = [\"https://check.example.org\"]"),
        &f.index,
        Some(&f.key),
        &["--web"],
    );
    let page = http1(
        web.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    let lower = page.to_ascii_lowercase();
    assert!(
        lower.contains("content-security-policy: default-src 'none'"),
        "{page}"
    );
    assert!(lower.contains("x-content-type-options: nosniff"));
    assert!(page.contains("Check privately"));

    let info = http1(web.addr, &grpc_web_info(""));
    assert!(info.starts_with("HTTP/1.1 200 OK"), "{info}");
    assert!(
        info.to_ascii_lowercase().contains("application/grpc-web"),
        "{info}"
    );
    assert!(info.contains("ristretto255-SHA512"), "{info}");

    let preflight = |origin: &str| {
        http1(
            web.addr,
            format!(
                "OPTIONS /breachcheck.v1.BreachCheck/Evaluate HTTP/1.1\r\nHost: x\r\n\
                 Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
                 Access-Control-Request-Headers: content-type,x-grpc-web\r\n\
                 Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .to_ascii_lowercase()
    };
    let allowed = preflight("https://check.example.org");
    assert!(
        allowed.contains("access-control-allow-origin: https://check.example.org"),
        "{allowed}"
    );
    let refused = preflight("https://evil.example");
    assert!(
        !refused.contains("access-control-allow-origin"),
        "{refused}"
    );
}

/// A grpc-web Evaluate of one blinded number over HTTP/1.1, from a client
/// that says it forwards for `forwarded_for`; the whole answer as text.
fn grpc_web_evaluate(server: &Replica, forwarded_for: &str) -> String {
    let blinded =
        breachcheck_proto::blind_batch(Mode::Voprf, &[b"+8613800138000"], &mut rand::rng())
            .expect("blind")
            .1;
    let msg = prost::Message::encode_to_vec(&EvaluateRequest {
        index_id: Vec::new(),
        blinded_elements: vec![blinded[0].to_bytes().to_vec()],
    });
    let mut body = vec![0];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let mut req = format!(
        "POST /breachcheck.v1.BreachCheck/Evaluate HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n\
         X-Forwarded-For: {forwarded_for}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    http1(server.addr, &req)
}

/// Whether a grpc-web answer is RESOURCE_EXHAUSTED.
fn spent(answer: &str) -> bool {
    answer.contains("grpc-status: 8") || answer.contains("grpc-status:8")
}

/// The anonymous quota of the per-address tests: five calls a day.
const FIVE_CALLS: &str = "[anonymous]\nelements_per_second = 100.0\nburst = 1000\n\
     elements_per_day = 100000\nbucket_bytes_per_day = 100000000\n\
     requests_per_second = 0.0001\nrequest_burst = 5\n";

/// See: #14. Anonymous calls are charged per client address: one address
/// spending its quota leaves another's whole. Behind a trusted proxy the
/// address is the forwarded one; from an untrusted peer, forwarding
/// headers are ignored (a forged `X-Forwarded-For` buys no fresh quota).
#[test]
fn anonymous_quota_is_per_client_address_and_forwarding_is_trusted_only_from_proxies() {
    let f = fixture();
    // Five Evaluate requests a day for each address (`request_burst`).
    let quota = FIVE_CALLS;
    let evaluate = grpc_web_evaluate;

    // Behind a trusted proxy (127.0.0.1): each forwarded address has its own.
    let dir = TempDir::new("anon-proxy");
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        format!(
            "allow_anonymous = true\nmax_batch = 64\ntrusted_proxies = [\"127.0.0.1\"]\n{quota}"
        ),
    )
    .expect("config");
    let proxied = Replica::start(&path, &f.index, Some(&f.key), &["--web"]);
    for _ in 0..5 {
        let a = evaluate(&proxied, "203.0.113.7");
        assert!(!spent(&a), "{a}");
    }
    assert!(spent(&evaluate(&proxied, "203.0.113.7")));
    let other = evaluate(&proxied, "198.51.100.20");
    assert!(!spent(&other), "another address shares the quota: {other}");
    // The same /64 is one IPv6 subscriber.
    for _ in 0..5 {
        assert!(!spent(&evaluate(&proxied, "2001:db8:1:2::a")));
    }
    assert!(spent(&evaluate(&proxied, "2001:db8:1:2::b")));

    // Without a trusted proxy, the header is the caller's word: ignored.
    let dir2 = TempDir::new("anon-direct");
    let path2 = dir2.join("server.toml");
    std::fs::write(
        &path2,
        format!("allow_anonymous = true\nmax_batch = 64\n{quota}"),
    )
    .expect("config");
    let direct = Replica::start(&path2, &f.index, Some(&f.key), &["--web"]);
    for i in 0..5 {
        assert!(!spent(&evaluate(&direct, &format!("192.0.2.{i}"))));
    }
    let forged = evaluate(&direct, "192.0.2.99");
    assert!(
        spent(&forged),
        "a forged X-Forwarded-For bought a fresh quota: {forged}"
    );
    // Logs and metrics name no address.
    let rejections = direct.metric("breachcheck_quota_rejections_total{api_key=\"anonymous\"}");
    assert!(rejections >= 1);
}

/// See: #14. With the Redis quota store, an address's anonymous quota is
/// one across replicas: spent through one, it is spent through the other;
/// another address keeps its own.
#[test]
fn per_address_quotas_are_shared_by_replicas_through_redis() {
    let f = fixture();
    let redis = crate::scale::Redis::start(None);
    let dir = TempDir::new("anon-redis");
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        format!(
            "allow_anonymous = true\nmax_batch = 64\ntrusted_proxies = [\"127.0.0.1\"]\n\
             [quota]\nbackend = \"redis\"\nurl = \"{}\"\n{FIVE_CALLS}",
            redis.url()
        ),
    )
    .expect("config");
    let a = Replica::start(&path, &f.index, Some(&f.key), &["--web"]);
    let b = Replica::start(&path, &f.index, Some(&f.key), &["--web"]);
    for i in 0..5 {
        let via = if i % 2 == 0 { &a } else { &b };
        let answer = grpc_web_evaluate(via, "203.0.113.50");
        assert!(!spent(&answer), "call {i}: {answer}");
    }
    assert!(spent(&grpc_web_evaluate(&a, "203.0.113.50")));
    assert!(spent(&grpc_web_evaluate(&b, "203.0.113.50")));
    assert!(!spent(&grpc_web_evaluate(&b, "203.0.113.51")));
    // The state lives under the address block (named in no metric).
    assert_eq!(
        redis
            .cmd(&["EXISTS", "breachcheck:{anonymous/203.0.113.50}"])
            .as_deref(),
        Some(":1")
    );
}

/// See: #14. All anonymous callers together are bounded by
/// `[anonymous_total]`, whatever their addresses: rotating addresses (or
/// forging them behind a trusted proxy) buys nothing past the pool.
#[test]
fn many_addresses_together_get_no_more_than_the_anonymous_pool() {
    let f = fixture();
    let dir = TempDir::new("anon-total");
    let path = dir.join("server.toml");
    std::fs::write(
        &path,
        format!(
            "allow_anonymous = true\nmax_batch = 64\ntrusted_proxies = [\"127.0.0.1\"]\n\
             {FIVE_CALLS}\n[anonymous_total]\nelements_per_second = 100.0\nburst = 1000\n\
             elements_per_day = 100000\nbucket_bytes_per_day = 100000000\n\
             requests_per_second = 0.0001\nrequest_burst = 8\n"
        ),
    )
    .expect("config");
    let server = Replica::start(&path, &f.index, Some(&f.key), &["--web"]);
    for i in 0..8 {
        let a = grpc_web_evaluate(&server, &format!("198.51.100.{i}"));
        assert!(!spent(&a), "call {i}: {a}");
    }
    assert!(spent(&grpc_web_evaluate(&server, "198.51.100.200")));
    assert!(spent(&grpc_web_evaluate(&server, "2001:db8:77::1")));
}
