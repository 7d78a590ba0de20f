//! The guard: a tower layer that admits or refuses each BreachCheck call from
//! its HTTP/2 headers alone, before tonic reads or decodes its body.
//!
//! Why a layer and not the handlers: tonic decodes the whole request message
//! before a handler runs, so a check there comes after the work an abuser
//! wants the server to do. Here, per call:
//!
//! 1. the connection counts the call as in flight (see `net`), until its
//!    response body is dropped;
//! 2. the `authorization` header is checked and one request is charged to
//!    the key ([`AppState::admit`]); a refusal is answered at once, trailers
//!    only, and the body is never read;
//! 3. the body must arrive in full within `request_body_timeout`
//!    (`DEADLINE_EXCEEDED` otherwise);
//! 4. a request tonic could not decode, which tonic answers `INTERNAL` before
//!    any handler runs, is answered `INVALID_ARGUMENT` instead: a malformed
//!    message is the caller's fault.
//!
//! Refusals go through the one `Refusal` → `Status` mapping in `error.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;

use crate::error::{Refusal, retry_after_secs};
use crate::serve::metrics::{Metrics, answer_code, rpc_name};
use crate::serve::net::{ConnInfo, RequestGuard};
use crate::serve::quota::{Call, Caller};
use crate::serve::source::client_address;
use crate::serve::state::AppState;

/// What the guard learned about an admitted call, for its handler (in the
/// request extensions).
#[derive(Debug, Clone)]
pub(crate) struct Admitted {
    /// Who is calling (already charged one request).
    pub(crate) caller: Caller,
    /// Set when the handler runs: an `INTERNAL` answer without it came from
    /// tonic failing to read or decode the request.
    entered: Arc<AtomicBool>,
}

/// Marks the call as having reached its handler (see [`Admitted`]).
pub(crate) fn mark_entered(extensions: &tonic::Extensions) {
    if let Some(a) = extensions.get::<Admitted>() {
        a.entered.store(true, Ordering::SeqCst);
    }
}

/// The call kind of a BreachCheck RPC name.
fn call_of(rpc: &str) -> Option<Call> {
    match rpc {
        "GetIndexInfo" => Some(Call::IndexInfo),
        "Evaluate" => Some(Call::Evaluate),
        "GetBuckets" | "GetPirSetup" => Some(Call::Buckets),
        "PirQuery" => Some(Call::Pir),
        _ => None,
    }
}

/// A refusal as a trailers-only response, counted by reason.
fn refuse(metrics: &Metrics, r: Refusal) -> http::Response<Body> {
    metrics.refused(r.reason());
    let status: tonic::Status = r.into();
    status.into_http()
}

/// The tower layer (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct GuardLayer {
    state: Arc<AppState>,
}

impl GuardLayer {
    /// A guard admitting calls against `state`'s keys and quotas.
    pub(crate) fn new(state: Arc<AppState>) -> Self {
        GuardLayer { state }
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`GuardLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub(crate) struct Guard<S> {
    inner: S,
    state: Arc<AppState>,
}

impl<S> tower::Service<http::Request<Body>> for Guard<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let conn = req.extensions().get::<ConnInfo>().cloned();
        let client = conn.as_ref().and_then(|c| c.remote).map(|peer| {
            let config = self.state.config();
            client_address(
                peer.ip(),
                req.headers(),
                &config.trusted_proxies,
                config.forwarded_header,
            )
        });
        let in_flight = conn.as_ref().map(ConnInfo::request_started);
        let refusals = conn.clone();
        if let Some(c) = conn {
            // What tonic's own TCP incoming provides: `Request::remote_addr`.
            req.extensions_mut().insert(TcpConnectInfo {
                local_addr: None,
                remote_addr: c.remote,
            });
        }
        let Some(call) = rpc_name(req.uri().path()).and_then(call_of) else {
            // Health and reflection: cheap, public, only counted in flight.
            let answer = self.inner.call(req);
            return Box::pin(async move { Ok(track(answer.await?, in_flight)) });
        };
        let metrics = self.state.metrics.clone();
        let state = self.state.clone();
        // `poll_ready` readied `self.inner`: take it for this call and leave
        // a fresh clone for the next (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let header = req.headers().get(http::header::AUTHORIZATION).cloned();
            let caller = match state
                .admit(header.as_ref().map(|v| v.as_bytes()), call, client)
                .await
            {
                Ok(caller) => caller,
                Err(r) => {
                    // Redis down is not the caller's doing.
                    if let (Some(c), false) = (&refusals, matches!(r, Refusal::QuotaUnavailable)) {
                        c.refused(matches!(r, Refusal::MissingApiKey | Refusal::InvalidApiKey));
                    }
                    return Ok(track(refuse(&metrics, r), in_flight));
                }
            };
            let entered = Arc::new(AtomicBool::new(false));
            req.extensions_mut().insert(Admitted {
                caller,
                entered: entered.clone(),
            });
            let limit = state.config().request_body_timeout;
            let req = req.map(|b| Body::new(DeadlineBody::new(b, limit, metrics.clone())));
            let resp = inner.call(req).await?;
            let resp = if !entered.load(Ordering::SeqCst)
                && answer_code(resp.headers()) == tonic::Code::Internal
            {
                if let Some(c) = &refusals {
                    c.refused(false);
                }
                refuse(&metrics, Refusal::MalformedRequest)
            } else {
                resp
            };
            Ok(track(resp, in_flight))
        })
    }
}

/// The response, keeping its request counted in flight on the connection
/// until the body (a GetBuckets stream, say) is done or dropped.
pub(crate) fn track(
    resp: http::Response<Body>,
    in_flight: Option<RequestGuard>,
) -> http::Response<Body> {
    match in_flight {
        Some(guard) => resp.map(|inner| {
            Body::new(Tracked {
                inner,
                _guard: guard,
            })
        }),
        None => resp,
    }
}

/// A response body holding a [`RequestGuard`].
struct Tracked {
    inner: Body,
    _guard: RequestGuard,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails with [`Refusal::SlowRequest`] unless it ends
/// within its deadline.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
    metrics: Arc<Metrics>,
    done: bool,
}

impl DeadlineBody {
    fn new(inner: Body, limit: Duration, metrics: Arc<Metrics>) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
            metrics,
            done: false,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame)),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.done = true;
                let r = Refusal::SlowRequest {
                    secs: retry_after_secs(this.limit),
                };
                this.metrics.refused(r.reason());
                Poll::Ready(Some(Err(r.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_three_rpcs_are_guarded() {
        assert_eq!(call_of("Evaluate"), Some(Call::Evaluate));
        assert_eq!(call_of("GetBuckets"), Some(Call::Buckets));
        assert_eq!(call_of("GetIndexInfo"), Some(Call::IndexInfo));
        assert_eq!(call_of("Check"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_fails_with_deadline_exceeded() {
        // A body that is never ready: a channel whose sender is held.
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(1);
        let stalled = http_body_util_stream(rx);
        let metrics = Arc::new(Metrics::default());
        let mut body = DeadlineBody::new(stalled, Duration::from_secs(3), metrics.clone());
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let status = frame.expect("an answer").expect_err("an error");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(body.is_end_stream());
        assert!(
            metrics
                .render()
                .contains("breachcheck_refusals_total{reason=\"slow_request\"} 1")
        );
    }

    /// A tonic body over a channel of frames.
    fn http_body_util_stream(
        rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, tonic::Status>>,
    ) -> Body {
        struct Rx(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, tonic::Status>>);
        impl HttpBody for Rx {
            type Data = Bytes;
            type Error = tonic::Status;
            fn poll_frame(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
                self.get_mut().0.poll_recv(cx)
            }
        }
        Body::new(Rx(rx))
    }
}
