//! Proxy layer: a request's hash for consistent-hash balancing, from its route's
//! `hash_policy` as Envoy computes it (xxHash64 of each input, combined), and the cookie a
//! cookie policy with a TTL makes when the request has none.
use std::net::SocketAddr;

use bytes::Bytes;
use model::hash_policy::{CookieHash, HashInput, HashPolicies};

use super::lb::{xx64, xx64_chain};
use crate::stream::headers::RequestHead;

/// The request's hash (`None`: no policy found its input), and the `set-cookie` value its
/// response carries when a cookie was made.
#[derive(Default)]
pub struct RequestHash {
    pub hash: Option<u64>,
    pub set_cookie: Option<Bytes>,
}

/// Evaluates `policies` on `request`, which came from `remote` to `local`.
pub fn request_hash(
    policies: &HashPolicies,
    request: &RequestHead,
    remote: SocketAddr,
    local: SocketAddr,
) -> RequestHash {
    let mut set_cookie = None;
    let hash = policies.combine(|input| match input {
        HashInput::Header { name, rewrite } => {
            let mut found = request.headers.get_all(name);
            let first = found.next()?;
            let rest: Vec<_> = found.collect();
            if rest.is_empty() && rewrite.is_none() {
                return Some(xx64(first, 0)); // one value as sent: nothing to copy
            }
            let mut values: Vec<Vec<u8>> = std::iter::once(first)
                .chain(rest)
                .map(|v| match rewrite {
                    Some(rewrite) => rewrite.replace_all(v),
                    None => v.to_vec(),
                })
                .collect();
            // The same hash whatever order the values came in.
            values.sort();
            Some(xx64_chain(values.iter().map(Vec::as_slice)))
        }
        HashInput::Cookie(cookie) => match cookie_value(request, &cookie.name) {
            Some(value) => Some(xx64(value, 0)),
            None => {
                let ttl = cookie.ttl?;
                let value = made_cookie(remote, local);
                set_cookie = Some(Bytes::from(set_cookie_value(cookie, &value, ttl)));
                Some(xx64(value.as_bytes(), 0))
            }
        },
        HashInput::SourceIp => {
            // The address as text (what Envoy hashes), written on the stack, not allocated.
            let mut text = [0u8; 46];
            let len = {
                let mut rest = &mut text[..];
                std::io::Write::write_fmt(&mut rest, format_args!("{}", remote.ip())).ok()?;
                46 - rest.len()
            };
            Some(xx64(&text[..len], 0))
        }
        HashInput::QueryParameter(name) => query_value(&request.path, name).map(|v| xx64(v, 0)),
    });
    RequestHash { hash, set_cookie }
}

/// The value of the first cookie `name` in the request's `cookie` headers, without
/// surrounding quotes; an empty one counts as none.
fn cookie_value<'r>(request: &'r RequestHead, name: &str) -> Option<&'r [u8]> {
    let value = request
        .headers
        .get_all("cookie")
        .flat_map(|header| header.split(|b| *b == b';'))
        .find_map(|pair| {
            let spaces = pair.iter().take_while(|b| **b == b' ').count();
            let pair = &pair[spaces..];
            let at = pair.iter().position(|b| *b == b'=')?;
            (&pair[..at] == name.as_bytes()).then_some(&pair[at + 1..])
        })?;
    let value = match value {
        [b'"', inner @ .., b'"'] => inner,
        value => value,
    };
    (!value.is_empty()).then_some(value)
}

/// The first value of query parameter `name` as sent (not decoded): `""` for a bare name.
fn query_value<'p>(path: &'p [u8], name: &str) -> Option<&'p [u8]> {
    let query = &path[path.iter().position(|b| *b == b'?')? + 1..];
    query.split(|b| *b == b'&').find_map(|param| {
        let (key, value) = match param.iter().position(|b| *b == b'=') {
            Some(at) => (&param[..at], &param[at + 1..]),
            None => (param, &b""[..]),
        };
        (key == name.as_bytes()).then_some(value)
    })
}

/// A new cookie's value: the hex xxHash64 of the connection's addresses, so every request of
/// one connection gets the same.
fn made_cookie(remote: SocketAddr, local: SocketAddr) -> String {
    format!("{:016x}", xx64(format!("{remote}{local}").as_bytes(), 0))
}

/// The `set-cookie` value, in Envoy's form and order.
fn set_cookie_value(cookie: &CookieHash, value: &str, ttl: u64) -> String {
    let mut out = format!("{}=\"{value}\"", cookie.name);
    if ttl > 0 {
        out.push_str(&format!("; Max-Age={ttl}"));
    }
    if !cookie.path.is_empty() {
        out.push_str(&format!("; Path={}", cookie.path));
    }
    for (name, value) in &cookie.attributes {
        match value.is_empty() {
            true => out.push_str(&format!("; {name}")),
            false => out.push_str(&format!("; {name}={value}")),
        }
    }
    out.push_str("; HttpOnly");
    out
}

#[cfg(test)]
mod tests {
    use model::hash_policy::HashPolicy;

    use super::*;
    use crate::stream::headers::{Headers, Version};

    fn request(path: &str, headers: &[(&str, &str)]) -> RequestHead {
        let mut map = Headers::with_capacity(headers.len());
        for (name, value) in headers {
            map.append(name.to_string(), value.to_string());
        }
        RequestHead {
            method: Bytes::from_static(b"GET"),
            path: Bytes::from(path.to_string()),
            version: Version::Http11,
            headers: map,
        }
    }

    fn one(input: HashInput) -> HashPolicies {
        HashPolicies {
            policies: vec![HashPolicy {
                input,
                terminal: false,
            }],
        }
    }

    const REMOTE: &str = "127.0.0.1:40000";
    const LOCAL: &str = "127.0.0.1:10000";

    fn hash(policies: &HashPolicies, request: &RequestHead) -> RequestHash {
        request_hash(
            policies,
            request,
            REMOTE.parse().unwrap(),
            LOCAL.parse().unwrap(),
        )
    }

    #[test]
    fn header_values_hash_in_sorted_order() {
        let policy = one(HashInput::Header {
            name: "x-user".into(),
            rewrite: None,
        });
        let single = hash(&policy, &request("/", &[("x-user", "alice")]));
        assert_eq!(single.hash, Some(xx64(b"alice", 0)));
        let ab = hash(&policy, &request("/", &[("x-user", "a"), ("x-user", "b")]));
        let ba = hash(&policy, &request("/", &[("x-user", "b"), ("x-user", "a")]));
        assert_eq!(ab.hash, ba.hash);
        assert_eq!(ab.hash, Some(xx64(b"b", xx64(b"a", 0))));
        assert_eq!(hash(&policy, &request("/", &[])).hash, None);
    }

    #[test]
    fn query_parameters_are_read_undecoded() {
        let policy = one(HashInput::QueryParameter("id".into()));
        let got = |path| hash(&policy, &request(path, &[])).hash;
        assert_eq!(got("/a?x=1&id=a%20b&id=2"), Some(xx64(b"a%20b", 0)));
        assert_eq!(got("/a?id"), Some(xx64(b"", 0)));
        assert_eq!(got("/a?idx=1"), None);
        assert_eq!(got("/a"), None);
    }

    #[test]
    fn a_cookie_is_read_or_made() {
        let cookie = |ttl| {
            one(HashInput::Cookie(CookieHash {
                name: "sticky".into(),
                path: "/app".into(),
                ttl,
                attributes: vec![
                    ("SameSite".into(), "Lax".into()),
                    ("Secure".into(), "".into()),
                ],
            }))
        };
        let sent = request("/", &[("cookie", "a=1; sticky=\"abc\"; b=2")]);
        let got = hash(&cookie(Some(60)), &sent);
        assert_eq!(got.hash, Some(xx64(b"abc", 0)));
        assert!(got.set_cookie.is_none());
        // Absent without a TTL: no hash.
        assert_eq!(hash(&cookie(None), &request("/", &[])).hash, None);
        let made = hash(&cookie(Some(60)), &request("/", &[]));
        let value = format!("{:016x}", xx64(format!("{REMOTE}{LOCAL}").as_bytes(), 0));
        assert_eq!(made.hash, Some(xx64(value.as_bytes(), 0)));
        assert_eq!(
            made.set_cookie.unwrap(),
            format!("sticky=\"{value}\"; Max-Age=60; Path=/app; SameSite=Lax; Secure; HttpOnly")
        );
        let session = hash(&cookie(Some(0)), &request("/", &[]));
        assert!(!std::str::from_utf8(&session.set_cookie.unwrap())
            .unwrap()
            .contains("Max-Age"));
    }

    #[test]
    fn the_source_ip_hashes_without_its_port() {
        let got = hash(&one(HashInput::SourceIp), &request("/", &[]));
        assert_eq!(got.hash, Some(xx64(b"127.0.0.1", 0)));
    }
}
