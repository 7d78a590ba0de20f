//! grpc-web framing, binary mode (`application/grpc-web+proto`), as the gRPC
//! project's `PROTOCOL-WEB.md` defines it: the body of a request or a
//! response is a run of frames, each a flag byte, a big-endian 32-bit length
//! and that many bytes. Flag `0x00` is a message; flag `0x80` is the
//! trailers (`name: value` lines, CRLF-separated), which end a response. A
//! response without trailers names its status in its HTTP headers instead
//! ("trailers-only"). The page's JavaScript moves the bytes with `fetch`;
//! everything it receives is decoded here, bounded, before anything trusts
//! it.

use prost::Message;

/// The flag of a message frame.
const MESSAGE: u8 = 0x00;
/// The flag bit of the trailers frame.
const TRAILERS: u8 = 0x80;
/// The flag bit of a compressed message (never asked for, so refused).
const COMPRESSED: u8 = 0x01;
/// The longest trailers block accepted.
const MAX_TRAILERS: usize = 16 << 10;

/// `msg` as the body of a grpc-web request: one uncompressed frame.
pub fn frame(msg: &impl Message) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(5 + len);
    out.push(MESSAGE);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    msg.encode(&mut out)
        .unwrap_or_else(|_| unreachable!("a Vec grows as needed"));
    out
}

/// Why a grpc-web call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The server answered with a gRPC status other than OK.
    #[error("{}", status_text(*code, message))]
    Status {
        /// The gRPC status code.
        code: u32,
        /// The server's message (percent-decoded), for people.
        message: String,
    },
    /// The body is not a well-formed grpc-web answer: cut short, no status,
    /// a frame after the trailers, a compressed frame.
    #[error("the server's answer is malformed ({0}); nothing was decided from it")]
    Malformed(&'static str),
}

/// The messages of a grpc-web response `body` whose HTTP headers carried
/// `header_status` and `header_message` (a trailers-only answer), in order.
/// The call must end with status OK, in the headers or in the trailers
/// frame; an answer cut short (no status at all) is an error, never a short
/// list of messages.
///
/// # Errors
///
/// [`CallError::Status`] for a status other than 0, [`CallError::Malformed`]
/// for a body that is not a complete grpc-web answer.
pub fn messages<'a>(
    body: &'a [u8],
    header_status: Option<&str>,
    header_message: Option<&str>,
) -> Result<Vec<&'a [u8]>, CallError> {
    if let Some(code) = header_status {
        return match parse_code(code)? {
            0 if body.is_empty() => Err(CallError::Malformed("status OK but no message")),
            0 => Err(CallError::Malformed("a status in the headers and a body")),
            code => Err(CallError::Status {
                code,
                message: percent_decode(header_message.unwrap_or_default()),
            }),
        };
    }
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (&flag, after) = rest
            .split_first()
            .ok_or(CallError::Malformed("empty frame"))?;
        let len = after
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .ok_or(CallError::Malformed("a frame header cut short"))? as usize;
        let end = len
            .checked_add(4)
            .filter(|&e| e <= after.len())
            .ok_or(CallError::Malformed("a frame cut short"))?;
        let data = &after[4..end];
        rest = &after[end..];
        if flag & TRAILERS != 0 {
            if !rest.is_empty() {
                return Err(CallError::Malformed("data after the trailers"));
            }
            return trailers_status(data).map(|()| out);
        }
        if flag & COMPRESSED != 0 || flag != MESSAGE {
            return Err(CallError::Malformed("a compressed or unknown frame"));
        }
        out.push(data);
    }
    Err(CallError::Malformed(
        "the answer ended without a status (cut short?)",
    ))
}

/// The status of a trailers block: `Ok` for `grpc-status: 0`.
fn trailers_status(block: &[u8]) -> Result<(), CallError> {
    if block.len() > MAX_TRAILERS {
        return Err(CallError::Malformed("trailers too long"));
    }
    let text = std::str::from_utf8(block).map_err(|_| CallError::Malformed("trailers not text"))?;
    let mut code = None;
    let mut message = String::new();
    for line in text.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "grpc-status" => code = Some(parse_code(value.trim())?),
            "grpc-message" => message = percent_decode(value.trim()),
            _ => {}
        }
    }
    match code {
        Some(0) => Ok(()),
        Some(code) => Err(CallError::Status { code, message }),
        None => Err(CallError::Malformed("trailers without grpc-status")),
    }
}

fn parse_code(s: &str) -> Result<u32, CallError> {
    s.trim()
        .parse::<u32>()
        .ok()
        .filter(|&c| c <= 16)
        .ok_or(CallError::Malformed("grpc-status is not a status code"))
}

/// `%XX` sequences decoded (gRPC's grpc-message encoding); invalid ones and
/// invalid UTF-8 kept as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A gRPC status as a sentence for the page: what happened and what to do.
pub fn status_text(code: u32, message: &str) -> String {
    match code {
        8 => format!(
            "the server's quota for checks from your address is used up ({message}); try again later"
        ),
        16 => "the server refused the check: it needs an API key, and this page has none \
               (the operator has not opened the server to anonymous checks)"
            .to_owned(),
        5 | 9 => "the server's index changed during the check; check again".to_owned(),
        4 | 14 => format!("the server is unavailable ({message}); try again later"),
        3 | 11 => format!("the server refused the request ({message})"),
        _ => format!("server error {code}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(flag: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn messages_then_ok_trailers() {
        let mut body = framed(0, b"one");
        body.extend(framed(0, b"two"));
        body.extend(framed(0x80, b"grpc-status:0\r\ngrpc-message:\r\n"));
        assert_eq!(
            messages(&body, None, None),
            Ok(vec![&b"one"[..], &b"two"[..]])
        );
    }

    #[test]
    fn an_answer_without_status_is_an_error_not_a_short_list() {
        let body = framed(0, b"one");
        assert!(matches!(
            messages(&body, None, None),
            Err(CallError::Malformed(_))
        ));
        let mut cut = framed(0, b"one");
        cut.extend(framed(0x80, b"grpc-status:0"));
        cut.truncate(cut.len() - 3);
        assert!(messages(&cut, None, None).is_err());
    }

    #[test]
    fn statuses_in_trailers_and_headers_are_errors() {
        let body = framed(0x80, b"grpc-status: 8\r\ngrpc-message: quota%20spent\r\n");
        assert_eq!(
            messages(&body, None, None),
            Err(CallError::Status {
                code: 8,
                message: "quota spent".into()
            })
        );
        assert_eq!(
            messages(&[], Some("16"), Some("no key")),
            Err(CallError::Status {
                code: 16,
                message: "no key".into()
            })
        );
        assert!(messages(&[], Some("x"), None).is_err());
    }

    #[test]
    fn frames_after_trailers_and_compressed_frames_are_refused() {
        let mut body = framed(0x80, b"grpc-status:0");
        body.extend(framed(0, b"late"));
        assert!(messages(&body, None, None).is_err());
        let mut body = framed(1, b"zip");
        body.extend(framed(0x80, b"grpc-status:0"));
        assert!(messages(&body, None, None).is_err());
    }
}
