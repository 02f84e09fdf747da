//! The client's address behind trusted reverse proxies
//! (`server.trusted_proxies`, `server.forwarded_header`).
//!
//! The address a proxy reports is believed only when the request comes from
//! a trusted proxy, and the header is read right to left: each hop appends
//! the address it got the request from, so the rightmost entries are the
//! trusted proxies' own and the first untrusted one is the client. Whatever
//! a client wrote further left is its own claim and never read. An entry
//! that is not an address (`unknown`, an obfuscated `_hidden`, garbage) ends
//! the walk at the last address known: the hop that cannot name its client
//! stands for it (so such clients share one counter, as without proxies).
//!
//! Hand-written: a few lines over `str::rsplit`, with no crate that fits
//! both headers' right-to-left rule.
//!
//! Owns: reading the client's address from a forwarded header. Never
//! imports: anything of the crate but `config` (the header's kind and the
//! trusted networks' type).

use std::net::IpAddr;

use crate::config::{ForwardedHeader, ProxyNet};

/// The client's address: `peer` (the TCP peer) unless it is a trusted
/// proxy, then the first untrusted address of `header` (the value of
/// `kind`, when the request carries it) from the right.
pub fn client_ip(
    peer: IpAddr,
    header: Option<&[u8]>,
    kind: ForwardedHeader,
    trusted: &[ProxyNet],
) -> IpAddr {
    let is_trusted = |a: IpAddr| trusted.iter().any(|n| n.contains(a));
    let mut client = peer.to_canonical();
    if !is_trusted(client) {
        return client;
    }
    let Some(value) = header.and_then(|v| std::str::from_utf8(v).ok()) else {
        return client;
    };
    for entry in value.rsplit(',') {
        let next = match kind {
            ForwardedHeader::XForwardedFor => node_address(entry),
            ForwardedHeader::Forwarded => forwarded_for(entry).and_then(node_address),
        };
        let Some(next) = next else {
            break;
        };
        client = next.to_canonical();
        if !is_trusted(client) {
            break;
        }
    }
    client
}

/// The `for=` parameter of one `Forwarded` element (RFC 7239 §4:
/// `for=192.0.2.60;proto=http;by=203.0.113.43`), without its quotes.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// An address as proxies write it: `192.0.2.60`, `192.0.2.60:4711`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn node_address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(addr) = text.parse() {
        return Some(addr);
    }
    // An IPv4 address with a port (an IPv6 one without brackets has parsed
    // above or is not an address).
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<ProxyNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;
    const FWD: ForwardedHeader = ForwardedHeader::Forwarded;

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let h = Some(&b"203.0.113.9"[..]);
        assert_eq!(client_ip(ip("10.0.0.1"), h, XFF, &[]), ip("10.0.0.1"));
        // A peer that is not trusted: its header is the client's own claim.
        let t = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("198.51.100.1"), h, XFF, &t),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn the_first_untrusted_address_from_the_right() {
        let t = nets(&["10.0.0.0/8", "::1"]);
        let from = |h: &str| client_ip(ip("10.0.0.1"), Some(h.as_bytes()), XFF, &t);
        assert_eq!(from("203.0.113.9"), ip("203.0.113.9"));
        // A client's forged entries to the left are never read.
        assert_eq!(from("1.2.3.4, 203.0.113.9"), ip("203.0.113.9"));
        // Trusted hops on the right are skipped.
        assert_eq!(
            from("1.2.3.4, 203.0.113.9, 10.9.9.9,10.0.0.2"),
            ip("203.0.113.9")
        );
        assert_eq!(from("203.0.113.9:5555"), ip("203.0.113.9"));
        assert_eq!(from("[2001:db8::7]:443"), ip("2001:db8::7"));
        assert_eq!(from("2001:db8::7"), ip("2001:db8::7"));
        // Every entry trusted: the leftmost.
        assert_eq!(from("10.1.1.1, 10.2.2.2"), ip("10.1.1.1"));
        // Not an address: the walk stops at the last address known.
        assert_eq!(from("203.0.113.9, unknown"), ip("10.0.0.1"));
        assert_eq!(from("203.0.113.9, garbage, 10.0.0.5"), ip("10.0.0.5"));
        assert_eq!(from(""), ip("10.0.0.1"));
        // No header: the proxy itself.
        assert_eq!(client_ip(ip("10.0.0.1"), None, XFF, &t), ip("10.0.0.1"));
        // An IPv4-mapped peer is its IPv4 address.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), Some(b"203.0.113.9"), XFF, &t),
            ip("203.0.113.9")
        );
        // Not UTF-8: the proxy.
        assert_eq!(
            client_ip(ip("10.0.0.1"), Some(b"\xff"), XFF, &t),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn rfc_7239_forwarded() {
        let t = nets(&["10.0.0.0/8"]);
        let from = |h: &str| client_ip(ip("10.0.0.1"), Some(h.as_bytes()), FWD, &t);
        assert_eq!(from("for=203.0.113.9"), ip("203.0.113.9"));
        assert_eq!(
            from(
                r#"for=1.2.3.4, For="[2001:db8:cafe::17]:4711";proto=https, for=10.0.0.3;by=10.0.0.1"#
            ),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(from("proto=https;for=203.0.113.9:80"), ip("203.0.113.9"));
        assert_eq!(from("for=unknown"), ip("10.0.0.1"));
        assert_eq!(from("for=_hidden, for=10.0.0.4"), ip("10.0.0.4"));
        assert_eq!(from("proto=https"), ip("10.0.0.1"));
    }
}
