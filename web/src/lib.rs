//! # breachcheck-web
//!
//! The breachcheck client core for the browser, compiled to
//! `wasm32-unknown-unknown` and exposed with `wasm-bindgen`. The page
//! (`web/page/`, served by `breachcheck-server serve --web`) canonicalises
//! and blinds the number here, inside the browser; the server sees one
//! blinded element and `j` bits of a public hash, exactly as with the SDK.
//!
//! No part of the protocol is written twice: the VOPRF, the phone numbers
//! and the buckets are `breachcheck-proto`'s, and every check of what the
//! server sends is the SDK's (`breachcheck_client::checks`, built without
//! its tonic transport). What is here is the order of the steps (`check`)
//! and grpc-web's framing (`grpcweb`); the page's JavaScript only moves
//! bytes with `fetch` and shows the outcome.
//!
//! `scripts/build-web` builds the `.wasm` and its JavaScript glue into
//! `web/dist/`, which the server embeds.

mod check;
mod grpcweb;

pub use check::{BreachView, Check, MAX_PAGE_ANSWER, Outcome, Session, WebError, client_work_ms};
pub use grpcweb::{CallError, frame, messages, percent_decode, status_text};

use breachcheck_proto::Region;
use breachcheck_proto::pb::GetIndexInfoRequest;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// The page's monotonic clock, in milliseconds.
    #[wasm_bindgen(js_namespace = performance)]
    fn now() -> f64;
}

fn js(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// The one message of a unary grpc-web answer.
fn unary(body: &[u8], status: Option<String>, message: Option<String>) -> Result<&[u8], JsError> {
    match messages(body, status.as_deref(), message.as_deref()).map_err(js)?[..] {
        [one] => Ok(one),
        _ => Err(js(CallError::Malformed("not exactly one message"))),
    }
}

/// The body of a GetIndexInfo request.
#[wasm_bindgen(js_name = indexInfoRequest)]
pub fn index_info_request() -> Vec<u8> {
    frame(&GetIndexInfoRequest {})
}

/// The regions whose national numbers the page understands (ISO 3166-1
/// alpha-2).
#[wasm_bindgen]
pub fn regions() -> Vec<String> {
    Region::known().map(str::to_owned).collect()
}

/// The country calling code of a region (`86` for `CN`), 0 if unknown.
#[wasm_bindgen(js_name = callingCode)]
pub fn calling_code(region: &str) -> u16 {
    Region::parse(region).map_or(0, |r| r.calling_code())
}

/// [`client_work_ms`] on the page's clock: the client's milliseconds per
/// number (blind, check, verify, finalize), for the benchmark.
///
/// # Errors
///
/// A protocol error.
#[wasm_bindgen(js_name = clientWorkMs)]
pub fn client_work_ms_js(rounds: u32) -> Result<f64, JsError> {
    client_work_ms(rounds, &now).map_err(js)
}

/// A checked index description with its pinned key ([`Session`]).
#[wasm_bindgen(js_name = Session)]
#[derive(Debug)]
pub struct JsSession(Session);

#[wasm_bindgen(js_class = Session)]
impl JsSession {
    /// From the GetIndexInfo answer: its body and the `grpc-status` and
    /// `grpc-message` headers, if any; `pinned_key` and `pinned_index` are
    /// 64 hex digits or empty.
    ///
    /// # Errors
    ///
    /// A failed call or any check of [`Session::new`].
    #[wasm_bindgen(constructor)]
    pub fn new(
        body: &[u8],
        status: Option<String>,
        message: Option<String>,
        pinned_key: Option<String>,
        pinned_index: Option<String>,
    ) -> Result<JsSession, JsError> {
        let m = unary(body, status, message)?;
        Session::new(m, pinned_key.as_deref(), pinned_index.as_deref())
            .map(JsSession)
            .map_err(js)
    }

    /// The index id, hex.
    #[wasm_bindgen(getter, js_name = indexId)]
    pub fn index_id(&self) -> String {
        self.0.index_id()
    }

    /// The key's fingerprint.
    #[wasm_bindgen(getter, js_name = keyFingerprint)]
    pub fn key_fingerprint(&self) -> String {
        self.0.key_fingerprint()
    }

    /// The public key, hex.
    #[wasm_bindgen(getter, js_name = publicKey)]
    pub fn public_key(&self) -> String {
        self.0.public_key()
    }

    /// Numbers in the index.
    #[wasm_bindgen(getter, js_name = entryCount)]
    pub fn entry_count(&self) -> f64 {
        self.0.entry_count() as f64
    }
}

/// One number's check ([`Check`]).
#[wasm_bindgen(js_name = Check)]
#[derive(Debug)]
pub struct JsCheck(Check);

#[wasm_bindgen(js_class = Check)]
impl JsCheck {
    /// Canonicalises and blinds `input` (national numbers in `region`).
    ///
    /// # Errors
    ///
    /// An unknown region or an input that is not a phone number.
    #[wasm_bindgen(constructor)]
    pub fn new(session: &JsSession, input: &str, region: &str) -> Result<JsCheck, JsError> {
        Check::new(&session.0, input, region)
            .map(JsCheck)
            .map_err(js)
    }

    /// The body of the Evaluate request.
    #[wasm_bindgen(js_name = evaluateRequest)]
    pub fn evaluate_request(&self, session: &JsSession) -> Vec<u8> {
        frame(&self.0.evaluate_request(&session.0))
    }

    /// Accepts the Evaluate answer (body, `grpc-status`, `grpc-message`).
    ///
    /// # Errors
    ///
    /// A failed call or any check of [`Check::accept_evaluation`].
    #[wasm_bindgen(js_name = acceptEvaluation)]
    pub fn accept_evaluation(
        &mut self,
        session: &JsSession,
        body: &[u8],
        status: Option<String>,
        message: Option<String>,
    ) -> Result<(), JsError> {
        let m = unary(body, status, message)?;
        self.0.accept_evaluation(&session.0, m).map_err(js)
    }

    /// The body of the GetBuckets request.
    #[wasm_bindgen(js_name = bucketsRequest)]
    pub fn buckets_request(&self, session: &JsSession) -> Vec<u8> {
        frame(&self.0.buckets_request(&session.0))
    }

    /// The most bytes of an honest GetBuckets answer; read no further.
    ///
    /// # Errors
    ///
    /// An answer too large for a browser.
    #[wasm_bindgen(js_name = maxAnswerBytes)]
    pub fn max_answer_bytes(&self, session: &JsSession) -> Result<f64, JsError> {
        self.0
            .max_answer_bytes(&session.0)
            .map(|b| b as f64)
            .map_err(js)
    }

    /// Accepts the GetBuckets answer and returns the [`Outcome`] as JSON.
    ///
    /// # Errors
    ///
    /// A failed call or any check of [`Check::accept_buckets`].
    #[wasm_bindgen(js_name = acceptBuckets)]
    pub fn accept_buckets(
        &self,
        session: &JsSession,
        body: &[u8],
        status: Option<String>,
        message: Option<String>,
    ) -> Result<String, JsError> {
        let ms = messages(body, status.as_deref(), message.as_deref()).map_err(js)?;
        let outcome = self.0.accept_buckets(&session.0, &ms).map_err(js)?;
        serde_json::to_string(&outcome).map_err(js)
    }
}
