//! Protocol layer: the HTTP/1 request syntax httparse leaves to its caller — CRLF line ends,
//! the method list, a higher minor version, and the authority grammar of Host and targets.
use std::net::Ipv6Addr;

/// Whether `block` has an LF not preceded by CR. Branch-free over the whole block, so it
/// vectorises: about 14 ns for a typical 500-byte head, cheaper than a memchr per line (a
/// head is mostly short lines).
pub(super) fn has_bare_lf(block: &[u8]) -> bool {
    let Some((&first, rest)) = block.split_first() else {
        return false;
    };
    let mut bare = first == b'\n';
    for (&b, &before) in rest.iter().zip(block) {
        bare |= (b == b'\n') & (before != b'\r');
    }
    bare
}

/// The request methods Envoy's HTTP/1 parser accepts (its Balsa adapter's `isMethodValid`
/// list in `source/common/http/http1/balsa_parser.cc`, without `allow_custom_methods`): the
/// http-parser / llhttp family's list — RFC 9110, WebDAV, CalDAV, Subversion, UPnP — without
/// `PRI` and `QUERY`. Envoy spells UPnP's `M-SEARCH` as `MSEARCH`, and Envoy 1.40 accepts
/// `MSEARCH` and refuses `M-SEARCH` (checked against the binary), so this list does too.
/// Case-sensitive (RFC 9110 §9.1).
pub(super) fn is_known_method(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET"
            | b"HEAD"
            | b"POST"
            | b"PUT"
            | b"DELETE"
            | b"CONNECT"
            | b"OPTIONS"
            | b"TRACE"
            | b"PATCH"
            | b"PURGE"
            | b"LINK"
            | b"UNLINK"
            | b"SOURCE"
            | b"ACL"
            | b"BIND"
            | b"REBIND"
            | b"UNBIND"
            | b"CHECKOUT"
            | b"COPY"
            | b"LOCK"
            | b"UNLOCK"
            | b"MERGE"
            | b"MKACTIVITY"
            | b"MKCALENDAR"
            | b"MKCOL"
            | b"MOVE"
            | b"MSEARCH"
            | b"NOTIFY"
            | b"SUBSCRIBE"
            | b"UNSUBSCRIBE"
            | b"PROPFIND"
            | b"PROPPATCH"
            | b"REPORT"
            | b"SEARCH"
    )
}

/// What a request line's `HTTP/d.d` version says, for versions httparse refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OtherVersion {
    /// `HTTP/1.x` with x > 1: served as HTTP/1.1 (RFC 9110 §2.5, §6.2); the minor digit sits
    /// at this offset of the request line.
    HigherMinor(usize),
    /// Another major version (505).
    Unsupported,
}

/// The version of a `method SP target SP HTTP/d.d` request line whose parts are non-empty;
/// `None` when the line is not of that form.
pub(super) fn other_version(line: &[u8]) -> Option<OtherVersion> {
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] = *version else {
        return None;
    };
    if method.is_empty() || target.is_empty() || !major.is_ascii_digit() {
        return None;
    }
    match (major, minor) {
        (b'1', b'2'..=b'9') => Some(OtherVersion::HigherMinor(line.len() - 1)),
        (_, b'0'..=b'9') => Some(OtherVersion::Unsupported),
        _ => None,
    }
}

/// The port of an authority `host [":" port]` (RFC 3986 §3.2.2-3.2.3, no userinfo), `None`
/// when it is not one: the host is a non-empty reg-name (which covers IPv4 addresses) or an IP
/// literal (RFC 9110 §4.2.1 forbids an empty host); the port is all digits, possibly empty
/// (also `b""` when there is no `:`).
pub(super) fn authority_port(authority: &[u8]) -> Option<&[u8]> {
    let (host, after) = match authority.first()? {
        b'[' => {
            let close = authority.iter().position(|b| *b == b']')?;
            (&authority[..=close], &authority[close + 1..])
        }
        _ => {
            let colon = authority
                .iter()
                .position(|b| *b == b':')
                .unwrap_or(authority.len());
            (&authority[..colon], &authority[colon..])
        }
    };
    let port = match after {
        [] => after,
        [b':', port @ ..] => port,
        _ => return None,
    };
    let valid_host = match host {
        [b'[', literal @ .., b']'] => is_ip_literal(literal),
        _ => !host.is_empty() && is_reg_name(host),
    };
    (valid_host && port.iter().all(u8::is_ascii_digit)).then_some(port)
}

/// `*( unreserved / pct-encoded / sub-delims )`: one table look-up a byte, and a second pass
/// only for names with a `%`.
fn is_reg_name(s: &[u8]) -> bool {
    s.iter().all(|&b| UNRESERVED_OR_SUB_DELIM[usize::from(b)]) || is_pct_encoded_reg_name(s)
}

fn is_pct_encoded_reg_name(s: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            if !(s.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
        } else if UNRESERVED_OR_SUB_DELIM[usize::from(b)] {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Inside the brackets: an IPv6 address, or `IPvFuture` = `"v" 1*HEXDIG "." 1*( unreserved /
/// sub-delims / ":" )`.
fn is_ip_literal(s: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = s {
        let digits = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        return match &rest[digits..] {
            [b'.', tail @ ..] => {
                digits > 0
                    && !tail.is_empty()
                    && tail
                        .iter()
                        .all(|&b| b == b':' || UNRESERVED_OR_SUB_DELIM[usize::from(b)])
            }
            _ => false,
        };
    }
    std::str::from_utf8(s).is_ok_and(|s| s.parse::<Ipv6Addr>().is_ok())
}

/// RFC 3986 §2.2-2.3, by byte.
const UNRESERVED_OR_SUB_DELIM: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = is_unreserved_or_sub_delim(b as u8);
        b += 1;
    }
    table
};

const fn is_unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_lf_anywhere_in_a_block() {
        assert!(!has_bare_lf(b""));
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\r\n\n"));
    }

    #[test]
    fn methods_are_envoys_case_sensitive_list() {
        for known in [
            &b"GET"[..],
            b"PURGE",
            b"MKCALENDAR",
            b"MSEARCH",
            b"UNSUBSCRIBE",
        ] {
            assert!(is_known_method(known), "{known:?}");
        }
        for unknown in [
            &b"get"[..],
            b"BREW",
            b"PRI",
            b"QUERY",
            b"M-SEARCH",
            b"",
            b"GETX",
        ] {
            assert!(!is_known_method(unknown), "{unknown:?}");
        }
    }

    #[test]
    fn versions_httparse_refuses() {
        assert_eq!(
            other_version(b"GET / HTTP/1.2"),
            Some(OtherVersion::HigherMinor(13))
        );
        assert_eq!(
            other_version(b"GET / HTTP/1.9"),
            Some(OtherVersion::HigherMinor(13))
        );
        assert_eq!(
            other_version(b"GET / HTTP/2.0"),
            Some(OtherVersion::Unsupported)
        );
        assert_eq!(
            other_version(b"GET / HTTP/0.9"),
            Some(OtherVersion::Unsupported)
        );
        for bad in [
            &b"GET / HTTP/1.10"[..],
            b"GET / HTTP/1.x",
            b"GET / HTTP/x.1",
            b"GET / http/1.2",
            b"GET /  HTTP/1.2",
            b" / HTTP/1.2",
            b"GET HTTP/1.2",
            b"GET / HTTP/1.2 x",
        ] {
            assert_eq!(other_version(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn authorities() {
        for (ok, port) in [
            (&b"example.com"[..], &b""[..]),
            (b"example.com:8080", b"8080"),
            (b"example.com:", b""),
            (b"192.0.2.1:80", b"80"),
            (b"[::1]", b""),
            (b"[::1]:443", b"443"),
            (b"[2001:db8::ffff:192.0.2.1]:1", b"1"),
            (b"[v1.fe80::a+en1]", b""),
            (b"a%2Db_c~!$&'()*+,;=", b""),
        ] {
            assert_eq!(authority_port(ok), Some(port), "{ok:?}");
        }
        for bad in [
            &b""[..],
            b":80",
            b"example.com:abc",
            b"example.com:8080:1",
            b"a b",
            b"a/b",
            b"user@host",
            b"a%2",
            b"a%zz",
            b"[::1",
            b"[::1]x",
            b"[::g]",
            b"[::1%25eth0]",
            b"[v.x]",
            b"[v1.]",
            b"::1",
            b"caf\xc3\xa9",
        ] {
            assert_eq!(authority_port(bad), None, "{bad:?}");
        }
    }
}
