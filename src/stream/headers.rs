//! Stream layer: protocol-independent request/response heads and their header list. Names
//! are stored lower-case; values are zero-copy slices of the buffer they were parsed from.
use bytes::Bytes;
use model::route::RouteRequest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Lower-case.
    pub name: Bytes,
    pub value: Bytes,
}

/// Headers in arrival order; repeated names are kept as separate entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<Header>,
}

impl Headers {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
        }
    }

    /// The first value of `name` (lower-case).
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.entries
            .iter()
            .find(|h| h.name == name.as_bytes())
            .map(|h| &h.value)
    }

    /// Every value of `name` (lower-case), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.entries
            .iter()
            .filter(move |h| h.name == name.as_bytes())
            .map(|h| &h.value)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.contains_bytes(name.as_bytes())
    }

    /// Whether there is a value of `name` (lower-case).
    pub fn contains_bytes(&self, name: &[u8]) -> bool {
        self.entries.iter().any(|h| h.name == name)
    }

    /// Adds an entry; `name` must be lower-case.
    pub fn append(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        let name = name.into();
        debug_assert!(!name.iter().any(u8::is_ascii_uppercase));
        self.entries.push(Header {
            name,
            value: value.into(),
        });
    }

    /// Replaces every value of `name` (lower-case) with one.
    pub fn set(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        let name = name.into();
        let value = value.into();
        let mut kept = false;
        self.entries.retain_mut(|h| {
            if h.name != name {
                return true;
            }
            if kept {
                return false;
            }
            h.value = value.clone();
            kept = true;
            true
        });
        if !kept {
            self.append(name, value);
        }
    }

    /// Removes every value of `name`; whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|h| h.name != name.as_bytes());
        self.entries.len() != before
    }

    pub fn retain(&mut self, keep: impl FnMut(&Header) -> bool) {
        self.entries.retain(keep);
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    Http2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
            Version::Http2 => "HTTP/2",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Bytes,
    /// Request target: origin form (path and query) after normalisation.
    pub path: Bytes,
    pub version: Version,
    /// Includes `host` (the authority); hop-by-hop headers already removed by the codec.
    pub headers: Headers,
}

impl RequestHead {
    pub fn authority(&self) -> &[u8] {
        self.headers.get("host").map_or(&[], |v| v)
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

impl RouteRequest for RequestHead {
    fn method(&self) -> &[u8] {
        &self.method
    }
    fn path(&self) -> &[u8] {
        &self.path
    }
    fn header(&self, lowercase_name: &str) -> Option<&[u8]> {
        if lowercase_name == ":authority" {
            return Some(self.authority());
        }
        self.headers.get(lowercase_name).map(|v| &v[..])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub version: Version,
    pub headers: Headers,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_all_and_keeps_position() {
        let mut h = Headers::default();
        h.append("a", "1");
        h.append("b", "2");
        h.append("a", "3");
        h.set("a", "4");
        let all: Vec<_> = h
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        assert_eq!(
            all,
            vec![("a".into(), "4".into()), ("b".into(), "2".into())]
        );
        assert!(h.remove("b"));
        assert!(!h.contains("b"));
    }
}
