//! Where a call comes from: the client address behind trusted proxies, and
//! the quota subject of an anonymous caller.
//!
//! A public web page runs without API keys, so anonymous calls are charged
//! per client address, not to one shared pool that one abuser could spend
//! for everyone. The address is the TCP peer's, unless the peer is a
//! configured trusted proxy: then the one forwarding header the operator
//! names (`X-Forwarded-For` by default, or `Forwarded`) is read from the
//! right (the address the nearest proxy saw) leftwards, skipping trusted
//! proxies, and the first untrusted address is the client. The other header
//! is never read: proxies pass on headers they do not set, so a client
//! could write it. Headers from an untrusted peer are ignored likewise.
//!
//! IPv6 clients are charged per /64 (one subscriber's usual allocation), so
//! the addresses of one network do not each get a fresh quota.

use std::net::{IpAddr, Ipv6Addr};

use crate::error::{Result, ServerError};
use crate::serve::config::ForwardedHeader;

/// An address block (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `addr` or `addr/bits`.
    ///
    /// # Errors
    ///
    /// [`ServerError::Input`] for anything else.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            ServerError::Input(format!(
                "trusted proxy {s:?} is not an address or CIDR block"
            ))
        };
        let (a, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return Err(bad());
        }
        // An IPv4-mapped block is the IPv4 block: peers are matched as IPv4.
        match addr {
            IpAddr::V6(v6) if bits >= 96 && v6.to_ipv4_mapped().is_some() => Ok(Cidr {
                addr: canonical(addr),
                bits: bits - 96,
            }),
            _ => Ok(Cidr { addr, bits }),
        }
    }

    /// Whether `ip` is in this block (IPv4-mapped IPv6 addresses as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    let rest = bits % 8;
    a[..full] == b[..full]
        && (rest == 0 || {
            let mask = 0xffu8 << (8 - rest);
            a[full] & mask == b[full] & mask
        })
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Hops read from the right before giving up: a longer chain is charged to
/// the last trusted hop reached (bounds the work per call).
const MAX_HOPS: usize = 32;

/// The client address of a call from `peer` with `headers`: the peer, or,
/// when the peer is one of `trusted`, the first untrusted address of the
/// `which` forwarding header read from the right. A hop that does not
/// parse leaves the last trusted hop as the client: the call is charged to
/// the proxy, never to an address an untrusted party chose.
pub(crate) fn client_address(
    peer: IpAddr,
    headers: &http::HeaderMap,
    trusted: &[Cidr],
    which: ForwardedHeader,
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let peer = canonical(peer);
    if !is_trusted(peer) {
        return peer;
    }
    let name = match which {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    };
    let mut hops: Vec<Option<IpAddr>> = Vec::new();
    for v in headers.get_all(name) {
        let Ok(s) = v.to_str() else {
            return peer;
        };
        for element in s.split(',') {
            hops.push(match which {
                ForwardedHeader::XForwardedFor => forwarded_for(element),
                ForwardedHeader::Forwarded => element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| forwarded_for(v))?
                }),
            });
        }
    }
    if hops.len() > MAX_HOPS {
        hops.drain(..hops.len() - MAX_HOPS);
        hops.insert(0, None);
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        match hop {
            Some(ip) if is_trusted(canonical(ip)) => client = canonical(ip),
            Some(ip) => return canonical(ip),
            None => return client,
        }
    }
    client
}

/// The address of a hop: `192.0.2.1`, `"192.0.2.1:4711"`,
/// `"[2001:db8::1]:4711"`, `2001:db8::1` (a `Forwarded` `for=` value or an
/// `X-Forwarded-For` entry).
fn forwarded_for(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse()
        .ok()
        .or_else(|| v.rsplit_once(':').and_then(|(a, _)| a.parse().ok()))
}

/// The quota subject of an anonymous caller at `ip`: the IPv4 address, or
/// the IPv6 /64.
pub(crate) fn quota_subject(ip: IpAddr) -> String {
    match source_key(ip) {
        IpAddr::V6(net) => format!("{net}/64"),
        v4 => v4.to_string(),
    }
}

/// The source `ip` counts as: the IPv4 address (also when IPv4-mapped), or
/// the IPv6 /64 with its host bits zero.
pub(crate) fn source_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;

    #[test]
    fn blocks_parse_and_match() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.1.2.3")));
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.1")));
        let c = Cidr::parse("2001:db8::/33").unwrap();
        assert!(c.contains(ip("2001:db8:7fff::1")));
        assert!(!c.contains(ip("2001:db8:8000::1")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("proxy.example").is_err());
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        // Written IPv4-mapped, it is the IPv4 block.
        assert!(
            Cidr::parse("::ffff:10.0.0.0/104")
                .unwrap()
                .contains(ip("10.9.9.9"))
        );
    }

    #[test]
    fn headers_of_an_untrusted_peer_are_ignored() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            client_address(ip("198.51.100.1"), &h, &[], XFF),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let at = |h: &http::HeaderMap, which| client_address(ip("10.0.0.1"), h, &trusted, which);
        // A client that forges a first hop: the proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.0.0.2")]);
        assert_eq!(at(&h, XFF), ip("203.0.113.9"));
        // Ports and brackets, as some proxies write them.
        let h = headers(&[("x-forwarded-for", "[2001:db8::9]:443, 10.0.0.2:80")]);
        assert_eq!(at(&h, XFF), ip("2001:db8::9"));
        let h = headers(&[(
            "forwarded",
            "for=1.2.3.4, for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.2",
        )]);
        assert_eq!(at(&h, ForwardedHeader::Forwarded), ip("2001:db8::7"));
        // The header the operator did not name is the client's word: unread.
        assert_eq!(at(&h, XFF), ip("10.0.0.1"));
        let h = headers(&[
            ("forwarded", "for=198.51.100.99"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(at(&h, XFF), ip("203.0.113.9"));
        // Garbage stops the walk at the last trusted hop.
        let h = headers(&[("x-forwarded-for", "203.0.113.9, bogus")]);
        assert_eq!(at(&h, XFF), ip("10.0.0.1"));
        // A chain longer than the bound is charged to the last trusted hop.
        let long = vec!["10.0.0.3"; 40].join(", ");
        let h = headers(&[("x-forwarded-for", &format!("203.0.113.9, {long}"))]);
        assert_eq!(at(&h, XFF), ip("10.0.0.3"));
        // No header: the proxy itself.
        assert_eq!(at(&http::HeaderMap::new(), XFF), ip("10.0.0.1"));
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        assert_eq!(
            quota_subject(ip("2001:db8:1:2:aaaa::1")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            quota_subject(ip("2001:db8:1:2:bbbb::9")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(quota_subject(ip("::ffff:192.0.2.5")), "192.0.2.5");
    }
}
