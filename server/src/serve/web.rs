//! The private-check web page (`serve --web`): its static files, embedded in
//! the binary, served by a tower layer in front of the gRPC router on the
//! same port, with a strict Content-Security-Policy. The page's calls come
//! back as grpc-web (`tonic-web` translates them) and meet the same guard,
//! quotas and handlers as native gRPC.
//!
//! The files: `web/page/` (HTML, CSS, the page's JavaScript) and `web/dist/`
//! (the WebAssembly client core and its `wasm-bindgen` glue, built by
//! `scripts/build-web`). Nothing is fetched from anywhere else: the policy
//! allows this origin only, and WebAssembly compilation.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;

use crate::serve::guard::track;
use crate::serve::net::ConnInfo;

/// The page's Content-Security-Policy: this origin's scripts, styles and
/// calls, WebAssembly compilation, and nothing else (no inline script, no
/// third party, no framing, no form posts).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self' \
     'wasm-unsafe-eval'; style-src 'self'; connect-src 'self'; img-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// The page's files.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../../web/page/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../web/page/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../../web/page/style.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../../web/page/favicon.svg"),
    },
    Asset {
        path: "/breachcheck_web.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../web/dist/breachcheck_web.js"),
    },
    Asset {
        path: "/breachcheck_web_bg.wasm",
        content_type: "application/wasm",
        bytes: include_bytes!("../../../web/dist/breachcheck_web_bg.wasm"),
    },
];

/// The gzip form of each asset, made once.
fn gzipped(i: usize) -> &'static Bytes {
    static GZ: OnceLock<Vec<Bytes>> = OnceLock::new();
    &GZ.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                use std::io::Write as _;
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                // Writing to a Vec cannot fail.
                let _ = e.write_all(a.bytes);
                Bytes::from(e.finish().unwrap_or_default())
            })
            .collect()
    })[i]
}

/// The page's total size in bytes, raw and gzip (for the benchmark).
pub fn page_size() -> (usize, usize) {
    let raw = ASSETS.iter().map(|a| a.bytes.len()).sum();
    let gz = (0..ASSETS.len()).map(|i| gzipped(i).len()).sum();
    (raw, gz)
}

/// The answer to a GET or HEAD of one of the page's paths; `None` for
/// anything else (which goes on to gRPC).
fn answer(req: &http::Request<Body>) -> Option<http::Response<Body>> {
    let head = req.method() == http::Method::HEAD;
    if req.method() != http::Method::GET && !head {
        return None;
    }
    let path = match req.uri().path() {
        "/index.html" => "/",
        p => p,
    };
    let i = ASSETS.iter().position(|a| a.path == path)?;
    let gzip = req
        .headers()
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(accepts_gzip);
    let bytes = if gzip {
        gzipped(i).clone()
    } else {
        Bytes::from_static(ASSETS[i].bytes)
    };
    let mut b = http::Response::builder()
        .status(http::StatusCode::OK)
        .header(http::header::CONTENT_TYPE, ASSETS[i].content_type)
        .header(http::header::CONTENT_LENGTH, bytes.len())
        .header(
            http::header::CONTENT_SECURITY_POLICY,
            CONTENT_SECURITY_POLICY,
        )
        .header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(http::header::REFERRER_POLICY, "no-referrer")
        .header("cross-origin-opener-policy", "same-origin")
        .header("cross-origin-resource-policy", "same-origin")
        .header(http::header::CACHE_CONTROL, "no-cache")
        .header(http::header::VARY, "accept-encoding");
    if gzip {
        b = b.header(http::header::CONTENT_ENCODING, "gzip");
    }
    let body = if head {
        Body::empty()
    } else {
        Body::new(Static(Some(bytes)))
    };
    b.body(body).ok()
}

/// Whether one `Accept-Encoding` element accepts gzip (`gzip`, `gzip;q=0.5`;
/// not `gzip;q=0`).
fn accepts_gzip(element: &str) -> bool {
    let mut parts = element.split(';').map(str::trim);
    if !parts.next().is_some_and(|c| c.eq_ignore_ascii_case("gzip")) {
        return false;
    }
    parts
        .filter_map(|p| p.strip_prefix("q="))
        .all(|q| q.parse::<f32>().is_ok_and(|q| q > 0.0))
}

/// A body of one chunk.
struct Static(Option<Bytes>);

impl HttpBody for Static {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.get_mut().0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

/// The layer serving the page (see the module docs); `enabled: false`
/// passes everything through.
#[derive(Debug, Clone, Copy)]
pub struct PageLayer {
    enabled: bool,
}

impl PageLayer {
    /// The page on (`serve --web`) or off.
    pub fn new(enabled: bool) -> Self {
        PageLayer { enabled }
    }
}

impl<S> tower::Layer<S> for PageLayer {
    type Service = Page<S>;

    fn layer(&self, inner: S) -> Page<S> {
        Page {
            inner,
            enabled: self.enabled,
        }
    }
}

/// The service [`PageLayer`] wraps.
#[derive(Debug, Clone)]
pub struct Page<S> {
    inner: S,
    enabled: bool,
}

impl<S> tower::Service<http::Request<Body>> for Page<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if self.enabled
            && let Some(resp) = answer(&req)
        {
            // A page load is a call on its connection: in flight until its
            // body is sent (so the handshake and idle deadlines treat it as
            // the guard treats an RPC).
            let in_flight = req
                .extensions()
                .get::<ConnInfo>()
                .map(ConnInfo::request_started);
            return Box::pin(async move { Ok(track(resp, in_flight)) });
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_sent_only_when_accepted() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip(" GZIP;q=0.5"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("br"));
        assert!(!accepts_gzip("gzipx"));
    }

    #[test]
    fn the_page_is_embedded_whole_and_small() {
        let (raw, gz) = page_size();
        assert!(raw > 0 && gz > 0 && gz < raw, "{raw} {gz}");
        for a in ASSETS {
            assert!(!a.bytes.is_empty(), "{} is empty", a.path);
        }
        // The page references only its own files.
        let html = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
