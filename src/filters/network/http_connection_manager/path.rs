//! HTTP connection manager: request path policy before routing — escaped slashes
//! (`path_with_escaped_slashes_action`), RFC 3986 normalisation (`normalize_path`) and
//! `merge_slashes`. The query is never touched.
use model::http::{EscapedSlashes, PathPolicy};

/// What the policy decided for a path.
#[derive(Debug, PartialEq, Eq)]
pub enum PathVerdict {
    /// Route with this path (unchanged when `None`).
    Forward(Option<Vec<u8>>),
    /// Answer 400.
    Reject,
    /// Redirect the client to this path (escaped slashes were unescaped).
    Redirect(Vec<u8>),
}

pub fn apply(policy: &PathPolicy, target: &[u8]) -> PathVerdict {
    if !target.starts_with(b"/") {
        return PathVerdict::Forward(None); // `*` (OPTIONS): nothing to normalise
    }
    let split = target
        .iter()
        .position(|b| *b == b'?' || *b == b'#')
        .unwrap_or(target.len());
    let (path, query) = target.split_at(split);
    let mut current: Option<Vec<u8>> = None;
    let mut redirect = false;
    if has_escaped_slash(path) {
        match policy.escaped_slashes {
            EscapedSlashes::KeepUnchanged => {}
            EscapedSlashes::RejectRequest => return PathVerdict::Reject,
            EscapedSlashes::UnescapeAndRedirect => {
                current = Some(unescape_slashes(path));
                redirect = true;
            }
            EscapedSlashes::UnescapeAndForward => current = Some(unescape_slashes(path)),
        }
    }
    if policy.normalize {
        let base = current.as_deref().unwrap_or(path);
        match normalize(base) {
            Some(n) if n != base => current = Some(n),
            Some(_) => {}
            None => return PathVerdict::Reject,
        }
    }
    if policy.merge_slashes {
        let base = current.as_deref().unwrap_or(path);
        if base.windows(2).any(|w| w == b"//") {
            current = Some(merge_slashes(base));
        }
    }
    let Some(mut new_path) = current else {
        return PathVerdict::Forward(None);
    };
    new_path.extend_from_slice(query);
    if redirect {
        PathVerdict::Redirect(new_path)
    } else {
        PathVerdict::Forward(Some(new_path))
    }
}

fn has_escaped_slash(path: &[u8]) -> bool {
    path.windows(3).any(|w| {
        w[0] == b'%' && (w[1] == b'2' && w[2] | 0x20 == b'f' || w[1] == b'5' && w[2] | 0x20 == b'c')
    })
}

fn unescape_slashes(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%' && i + 2 < path.len() {
            let hex = (path[i + 1], path[i + 2] | 0x20);
            if hex == (b'2', b'f') {
                out.push(b'/');
                i += 3;
                continue;
            }
            if hex == (b'5', b'c') {
                out.push(b'\\');
                i += 3;
                continue;
            }
        }
        out.push(path[i]);
        i += 1;
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §6.2.2: percent-encoded unreserved characters decoded, other escapes upper-cased,
/// backslashes made slashes (as Envoy), dot segments removed (§5.2.4). `None` when an escape
/// is malformed.
fn normalize(path: &[u8]) -> Option<Vec<u8>> {
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            b'%' => {
                let hi = hex_value(*path.get(i + 1)?)?;
                let lo = hex_value(*path.get(i + 2)?)?;
                let byte = hi << 4 | lo;
                if unreserved(byte) {
                    decoded.push(byte);
                } else {
                    decoded.push(b'%');
                    decoded.push(path[i + 1].to_ascii_uppercase());
                    decoded.push(path[i + 2].to_ascii_uppercase());
                }
                i += 3;
            }
            b'\\' => {
                decoded.push(b'/');
                i += 1;
            }
            b => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    Some(remove_dot_segments(&decoded))
}

fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = path[1..].split(|b| *b == b'/').collect();
    let last = parts.len() - 1;
    for (i, part) in parts.iter().enumerate() {
        match *part {
            b"." => {
                if i == last {
                    segments.push(b"");
                }
            }
            b".." => {
                segments.pop();
                if i == last {
                    segments.push(b"");
                }
            }
            other => segments.push(other),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for segment in segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

fn merge_slashes(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        if b == b'/' && out.last() == Some(&b'/') {
            continue;
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(normalize: bool, merge: bool, escaped: EscapedSlashes) -> PathPolicy {
        PathPolicy {
            normalize,
            merge_slashes: merge,
            escaped_slashes: escaped,
        }
    }

    fn forward(p: &PathPolicy, path: &str) -> String {
        match apply(p, path.as_bytes()) {
            PathVerdict::Forward(None) => path.to_string(),
            PathVerdict::Forward(Some(p)) => String::from_utf8(p).unwrap(),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn normalisation_follows_rfc3986() {
        let p = policy(true, false, EscapedSlashes::KeepUnchanged);
        assert_eq!(forward(&p, "/a/./b/../c?x=/../"), "/a/c?x=/../");
        assert_eq!(forward(&p, "/../../a"), "/a");
        assert_eq!(forward(&p, "/a/%7euser/%2f"), "/a/~user/%2F");
        assert_eq!(forward(&p, "/a\\b"), "/a/b");
        assert_eq!(forward(&p, "/a/.."), "/");
        assert_eq!(forward(&p, "/a/b/."), "/a/b/");
        assert_eq!(apply(&p, b"/a%zz"), PathVerdict::Reject);
    }

    #[test]
    fn slashes_merge_and_escaped_slashes_follow_the_action() {
        let p = policy(false, true, EscapedSlashes::KeepUnchanged);
        assert_eq!(forward(&p, "//a///b/?q=//"), "/a/b/?q=//");
        let reject = policy(false, false, EscapedSlashes::RejectRequest);
        assert_eq!(apply(&reject, b"/a%2Fb"), PathVerdict::Reject);
        let unescape = policy(false, false, EscapedSlashes::UnescapeAndForward);
        assert_eq!(forward(&unescape, "/a%2fb%5Cc"), "/a/b\\c");
        let redirect = policy(false, false, EscapedSlashes::UnescapeAndRedirect);
        assert_eq!(
            apply(&redirect, b"/a%2Fb?x"),
            PathVerdict::Redirect(b"/a/b?x".to_vec())
        );
        assert_eq!(forward(&redirect, "/plain"), "/plain");
    }
}
