//! Raw HTTP/2 and TCP, below any gRPC client: what an abuser sends. Used by
//! the abuse tests (`tests/abuse/`) and the soak (`src/bin/soak.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The Evaluate method's path.
pub const EVALUATE: &str = "/breachcheck.v1.BreachCheck/Evaluate";
/// The GetBuckets method's path.
pub const GET_BUCKETS: &str = "/breachcheck.v1.BreachCheck/GetBuckets";
/// The GetIndexInfo method's path.
pub const GET_INDEX_INFO: &str = "/breachcheck.v1.BreachCheck/GetIndexInfo";

/// The HTTP/2 client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 connection, driven by a task until it ends.
#[derive(Debug)]
pub struct H2 {
    /// Opens streams.
    pub send: SendRequest<Bytes>,
    /// The connection task: ends (with the error, if any) when the
    /// connection closes.
    pub conn: JoinHandle<Result<(), h2::Error>>,
}

/// The loopback address attackers connect from: not the legitimate
/// clients' 127.0.0.1, as an attacker on a network has an address of its
/// own (the server cools a source down, not every client).
pub const ATTACKER_SOURCE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 2);

/// A TCP connection to `addr` from [`ATTACKER_SOURCE`] (from any address
/// when `addr` is not IPv4 loopback).
///
/// # Errors
///
/// The bind or the connect failed.
pub async fn attacker_tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((ATTACKER_SOURCE, 0)))?;
            socket.connect(addr).await
        }
        _ => TcpStream::connect(addr).await,
    }
}

/// Opens an HTTP/2 connection to `addr` (plaintext, prior knowledge).
///
/// # Errors
///
/// The TCP connect or the HTTP/2 handshake failed.
pub async fn h2_connect(addr: SocketAddr) -> anyhow::Result<H2> {
    h2_over(TcpStream::connect(addr).await?).await
}

/// As [`h2_connect`], from [`ATTACKER_SOURCE`].
///
/// # Errors
///
/// The TCP connect or the HTTP/2 handshake failed.
pub async fn attacker_h2(addr: SocketAddr) -> anyhow::Result<H2> {
    h2_over(attacker_tcp(addr).await?).await
}

async fn h2_over(tcp: TcpStream) -> anyhow::Result<H2> {
    let _ = tcp.set_nodelay(true);
    let (send, conn) = h2::client::handshake(tcp).await?;
    let conn = tokio::spawn(conn);
    Ok(H2 { send, conn })
}

/// A gRPC POST to `path`, with `authorization: Bearer <token>` when given.
///
/// # Panics
///
/// If the token is not a valid header value (tests pass ASCII tokens).
pub fn grpc_request(path: &str, token: Option<&str>) -> http::Request<()> {
    let mut r = http::Request::builder()
        .method("POST")
        .uri(format!("http://breachcheck{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    #[allow(clippy::expect_used)]
    let request = r.body(()).expect("a valid request");
    request
}

/// One gRPC message frame: flag 0, big-endian length, the bytes.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(5 + message.len());
    f.push(0);
    f.extend_from_slice(&(message.len() as u32).to_be_bytes());
    f.extend_from_slice(message);
    Bytes::from(f)
}

/// The `grpc-status` and `grpc-message` of an answer: from the headers of a
/// trailers-only answer, else from the trailers after the body (drained).
///
/// # Errors
///
/// The stream or connection failed before a status arrived.
pub async fn grpc_status(resp: ResponseFuture) -> anyhow::Result<(i32, String)> {
    let resp = resp.await?;
    if let Some(s) = status_of(resp.headers()) {
        return Ok(s);
    }
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await?.unwrap_or_default();
    status_of(&trailers).ok_or_else(|| anyhow::anyhow!("an answer without grpc-status"))
}

fn status_of(h: &http::HeaderMap) -> Option<(i32, String)> {
    let code = h.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let msg = h
        .get("grpc-message")
        // Percent-encoded, as in grpc-web (the browser client's decoder).
        .map(|v| breachcheck_web::percent_decode(&String::from_utf8_lossy(v.as_bytes())))
        .unwrap_or_default();
    Some((code, msg))
}

/// Sends a gRPC call's headers and the first `partial` bytes of a frame, and
/// never ends the stream: a half-open call. Returns the answer to come, and
/// the stream, which the caller holds to keep the call half-open.
///
/// # Errors
///
/// HTTP/2 errors (the connection closed, the stream was refused).
pub async fn half_open(
    h2: &SendRequest<Bytes>,
    path: &str,
    token: Option<&str>,
    partial: usize,
) -> anyhow::Result<(ResponseFuture, h2::SendStream<Bytes>)> {
    let mut ready = h2.clone().ready().await?;
    let (resp, mut stream) = ready.send_request(grpc_request(path, token), false)?;
    if partial > 0 {
        let frame = grpc_frame(&[0x0a; 64]);
        // A server that answered (and closed the stream) from the headers
        // alone may already have made the stream inactive: the answer is
        // still in `resp`.
        let _ = stream.send_data(frame.slice(..partial.min(frame.len())), false);
    }
    Ok((resp, stream))
}

/// A whole unary gRPC call with `message` (the encoded protobuf) as body.
///
/// # Errors
///
/// HTTP/2 errors before a status arrived.
pub async fn unary(
    h2: &SendRequest<Bytes>,
    path: &str,
    token: Option<&str>,
    message: &[u8],
) -> anyhow::Result<(i32, String)> {
    let mut ready = h2.clone().ready().await?;
    let (resp, mut stream) = ready.send_request(grpc_request(path, token), false)?;
    // A server that refuses from the headers alone (no key, say) answers
    // and ends the stream before the body is sent; the client's connection
    // task may have seen that answer already, making the stream inactive:
    // the answer is still in `resp`, and a send that failed for any other
    // reason shows there too.
    let _ = stream.send_data(grpc_frame(message), true);
    grpc_status(resp).await
}

/// The parameters of the server's first SETTINGS frame, read over raw TCP
/// after sending the preface and an empty SETTINGS.
///
/// # Errors
///
/// I/O errors, or no SETTINGS frame within the first 64 KiB.
pub async fn server_settings(addr: SocketAddr) -> anyhow::Result<Vec<(u16, u32)>> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(PREFACE).await?;
    tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await?;
    let mut seen = 0usize;
    loop {
        let mut head = [0u8; 9];
        tcp.read_exact(&mut head).await?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await?;
        seen += 9 + len;
        // SETTINGS, not an ACK.
        if head[3] == 4 && head[4] & 1 == 0 {
            return Ok(payload
                .chunks_exact(6)
                .map(|p| {
                    (
                        u16::from_be_bytes([p[0], p[1]]),
                        u32::from_be_bytes([p[2], p[3], p[4], p[5]]),
                    )
                })
                .collect());
        }
        anyhow::ensure!(seen < 1 << 16, "no SETTINGS frame");
    }
}

/// Reads until the peer closes the connection (EOF or reset), giving up
/// after `limit` (a hang guard, not a measurement). Returns whether it
/// closed, and the bytes it sent before.
pub async fn until_closed(tcp: &mut TcpStream, limit: Duration) -> (bool, usize) {
    let mut buf = [0u8; 4096];
    let mut got = 0;
    let wait = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    };
    let closed = tokio::time::timeout(limit, wait).await.is_ok();
    (closed, got)
}
