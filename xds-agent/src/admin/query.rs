//! Admin query strings: `a=1&b&c=x%2Fy`, percent-decoded, in order.

/// Why a query string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("invalid percent-encoding in query parameter {0:?}")]
    BadEscape(String),
    #[error("query parameter {0:?} is not UTF-8 once decoded")]
    NotUtf8(String),
}

/// Parsed query parameters. A flag without `=` has an empty value. `+` stays a `+`
/// (not a space), so regex filters like `a+` reach `/stats` unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    params: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        let mut params = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            params.push((decode(key)?, decode(value)?));
        }
        Ok(Self { params })
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `key` is present, with or without a value.
    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn decode(raw: &str) -> Result<String, QueryError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| QueryError::BadEscape(raw.to_string()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| QueryError::NotUtf8(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_values_and_escapes() {
        let q = Query::parse("usedonly&filter=cluster%5C.a%2Bb&format=json").unwrap();
        assert!(q.has("usedonly"));
        assert_eq!(q.get("usedonly"), Some(""));
        assert_eq!(q.get("filter"), Some("cluster\\.a+b"));
        assert_eq!(q.get("format"), Some("json"));
        assert!(!q.has("type"));
        assert!(Query::parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_escapes_are_errors() {
        assert!(matches!(
            Query::parse("filter=%zz"),
            Err(QueryError::BadEscape(_))
        ));
        assert!(matches!(Query::parse("a=%ff"), Err(QueryError::NotUtf8(_))));
    }
}
