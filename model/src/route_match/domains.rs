//! Route matching: the virtual-host domain index, searched as Envoy does — exact domain, then
//! the longest `*suffix` wildcard, then the longest `prefix*` wildcard, then `*`. The
//! authority is compared lower-cased and with its port, unless
//! `ignore_port_in_host_matching` strips the port first.
use super::fast_hash::FastMap;

/// Wildcards of one kind, grouped by length (longest first), each without its `*`.
type Wildcards = Vec<(usize, FastMap<Box<[u8]>, u32>)>;

/// Domain index of a route table's virtual hosts (values are indexes into them).
#[derive(Debug, Default)]
pub struct VirtualHostIndex {
    exact: FastMap<Box<[u8]>, u32>,
    /// By wildcard length, longest first: `*.foo.com` is stored as `.foo.com`.
    suffixes: Wildcards,
    /// By wildcard length, longest first: `foo.*` is stored as `foo.`.
    prefixes: Wildcards,
    default: Option<u32>,
    ignore_port: bool,
}

/// A domain listed twice (Envoy refuses the route table).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("duplicate domain {domain:?} (also in virtual host {first_virtual_host})")]
pub struct DuplicateDomain {
    pub domain: String,
    /// Index of the virtual host that listed it first.
    pub first_virtual_host: usize,
}

/// Authorities up to this length are lower-cased on the stack.
const INLINE_AUTHORITY: usize = 256;

impl VirtualHostIndex {
    pub fn new(ignore_port: bool) -> Self {
        Self {
            ignore_port,
            ..Self::default()
        }
    }

    /// Adds `domain` of virtual host `virtual_host`.
    pub fn insert(&mut self, domain: &str, virtual_host: usize) -> Result<(), DuplicateDomain> {
        let lower = domain.to_ascii_lowercase().into_bytes();
        let vh = virtual_host as u32;
        let first = if lower == b"*" {
            match self.default {
                Some(first) => Some(first),
                None => {
                    self.default = Some(vh);
                    None
                }
            }
        } else if lower.first() == Some(&b'*') {
            add_wildcard(&mut self.suffixes, &lower[1..], vh)
        } else if lower.last() == Some(&b'*') {
            add_wildcard(&mut self.prefixes, &lower[..lower.len() - 1], vh)
        } else {
            insert_new(&mut self.exact, lower.into_boxed_slice(), vh)
        };
        match first {
            None => Ok(()),
            Some(first) => Err(DuplicateDomain {
                domain: domain.to_string(),
                first_virtual_host: first as usize,
            }),
        }
    }

    /// The virtual host for `authority` (the `host` header).
    pub fn find(&self, authority: &[u8]) -> Option<usize> {
        if self.exact.is_empty() && self.suffixes.is_empty() && self.prefixes.is_empty() {
            return self.default.map(|v| v as usize);
        }
        let mut host = authority;
        if self.ignore_port {
            if let Some(colon) = port_start(host) {
                host = &host[..colon];
            }
        }
        let mut inline = [0u8; INLINE_AUTHORITY];
        let owned;
        let host: &[u8] = if !host.iter().any(u8::is_ascii_uppercase) {
            host
        } else if host.len() <= INLINE_AUTHORITY {
            inline[..host.len()].copy_from_slice(host);
            inline[..host.len()].make_ascii_lowercase();
            &inline[..host.len()]
        } else {
            owned = host.to_ascii_lowercase();
            &owned
        };
        self.exact
            .get(host)
            .or_else(|| longest(&self.suffixes, host, |len| &host[host.len() - len..]))
            .or_else(|| longest(&self.prefixes, host, |len| &host[..len]))
            .or(self.default.as_ref())
            .map(|v| *v as usize)
    }
}

/// Where an authority's `:port` starts (not inside an IPv6 literal's brackets).
pub fn port_start(authority: &[u8]) -> Option<usize> {
    let colon = authority.iter().rposition(|b| *b == b':')?;
    match authority.iter().rposition(|b| *b == b']') {
        Some(bracket) if bracket > colon => None,
        _ => Some(colon),
    }
}

fn add_wildcard(by_len: &mut Wildcards, key: &[u8], vh: u32) -> Option<u32> {
    let slot = match by_len.iter().position(|(len, _)| *len <= key.len()) {
        Some(i) if by_len[i].0 == key.len() => i,
        Some(i) => {
            by_len.insert(i, (key.len(), FastMap::default()));
            i
        }
        None => {
            by_len.push((key.len(), FastMap::default()));
            by_len.len() - 1
        }
    };
    insert_new(&mut by_len[slot].1, key.into(), vh)
}

/// Inserts unless present; returns the existing value if there was one.
fn insert_new(map: &mut FastMap<Box<[u8]>, u32>, key: Box<[u8]>, vh: u32) -> Option<u32> {
    match map.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(vh);
            None
        }
    }
}

/// The longest wildcard matching `host`; a wildcard never matches the empty string, so only
/// wildcards shorter than the host are tried.
fn longest<'a>(
    by_len: &'a Wildcards,
    host: &[u8],
    part: impl Fn(usize) -> &'a [u8],
) -> Option<&'a u32> {
    by_len
        .iter()
        .filter(|(len, _)| *len < host.len())
        .find_map(|(len, map)| map.get(part(*len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(domains: &[&[&str]], ignore_port: bool) -> VirtualHostIndex {
        let mut index = VirtualHostIndex::new(ignore_port);
        for (vh, list) in domains.iter().enumerate() {
            for d in *list {
                index.insert(d, vh).unwrap();
            }
        }
        index
    }

    #[test]
    fn most_specific_domain_wins_in_envoys_order() {
        let i = index(
            &[
                &["www.foo.com"],
                &["*.foo.com"],
                &["*-bar.foo.com"],
                &["foo.*"],
                &["foo.bar.*"],
                &["*"],
            ],
            false,
        );
        let find = |h: &str| i.find(h.as_bytes());
        assert_eq!(find("www.foo.com"), Some(0));
        assert_eq!(find("WWW.Foo.COM"), Some(0));
        assert_eq!(find("a.foo.com"), Some(1));
        assert_eq!(find("baz-bar.foo.com"), Some(2), "longest suffix first");
        assert_eq!(
            find("-bar.foo.com"),
            Some(1),
            "a wildcard never matches empty"
        );
        assert_eq!(find(".foo.com"), Some(5), "*.foo.com needs one more char");
        assert_eq!(find("foo.org"), Some(3));
        assert_eq!(find("foo.bar.org"), Some(4), "longest prefix first");
        assert_eq!(find("foo.bar.foo.com"), Some(1), "suffixes before prefixes");
        assert_eq!(find("other"), Some(5));
        assert_eq!(find(""), Some(5));
    }

    #[test]
    fn port_is_part_of_the_authority_unless_ignored() {
        let i = index(&[&["a.com"], &["a.com:8080"], &["*.b.com"], &["*"]], false);
        assert_eq!(i.find(b"a.com"), Some(0));
        assert_eq!(i.find(b"a.com:8080"), Some(1));
        assert_eq!(
            i.find(b"a.com:9090"),
            Some(3),
            "no fallback to the bare host"
        );
        assert_eq!(i.find(b"x.b.com:80"), Some(3));
        let i = index(&[&["a.com"], &["[::1]"], &["*"]], true);
        assert_eq!(i.find(b"a.com:9090"), Some(0));
        assert_eq!(i.find(b"[::1]:80"), Some(1));
        assert_eq!(i.find(b"[::1]"), Some(1));
        assert_eq!(port_start(b"[::1]"), None);
        assert_eq!(port_start(b"[::1]:8"), Some(5));
    }

    #[test]
    fn only_default_matches_anything_and_empty_matches_nothing() {
        let i = index(&[&["*"]], false);
        assert_eq!(i.find(b"x"), Some(0));
        let i = index(&[&["a"]], false);
        assert_eq!(i.find(b"b"), None);
        assert_eq!(index(&[], false).find(b"a"), None);
    }

    #[test]
    fn long_uppercase_authorities_are_lowered_too() {
        let long = format!("{}.example.com", "A".repeat(300));
        let i = index(&[&[long.as_str()]], false);
        assert_eq!(i.find(long.to_ascii_uppercase().as_bytes()), Some(0));
    }

    #[test]
    fn duplicates_are_refused_case_insensitively() {
        let mut i = VirtualHostIndex::new(false);
        i.insert("A.com", 0).unwrap();
        assert_eq!(
            i.insert("a.COM", 2),
            Err(DuplicateDomain {
                domain: "a.COM".into(),
                first_virtual_host: 0
            })
        );
        i.insert("*", 1).unwrap();
        assert_eq!(i.insert("*", 3).unwrap_err().first_virtual_host, 1);
        i.insert("*.x", 0).unwrap();
        assert!(i.insert("*.X", 1).is_err());
        i.insert("x.*", 0).unwrap();
        assert!(i.insert("x.*", 1).is_err());
    }
}
