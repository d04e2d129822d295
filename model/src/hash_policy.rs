//! Domain model: `hash_policy` — what of a request or connection consistent-hash balancing
//! (RING_HASH, MAGLEV) hashes to pick a host.
use crate::route_match::RegexRewrite;

/// A route's or tcp_proxy's hash policies, in order. Each that finds its input rotates the
/// hash so far left by one bit and XORs its own in (Envoy's combination); a `terminal` one
/// that leaves a hash ends the list.
#[derive(Debug, Default)]
pub struct HashPolicies {
    pub policies: Vec<HashPolicy>,
}

#[derive(Debug)]
pub struct HashPolicy {
    pub input: HashInput,
    pub terminal: bool,
}

#[derive(Debug)]
pub enum HashInput {
    /// Every value of the header (lower-case name), each rewritten when `rewrite` is set,
    /// sorted, hashed in a chain.
    Header {
        name: Box<str>,
        rewrite: Option<RegexRewrite>,
    },
    Cookie(CookieHash),
    /// The downstream connection's source IP address (without port).
    SourceIp,
    /// The first value of the query parameter (as sent, not decoded).
    QueryParameter(Box<str>),
}

/// `cookie`: the cookie's value; when the request has none and `ttl` is set, a cookie made
/// from the connection's addresses, which the response then sets.
#[derive(Debug)]
pub struct CookieHash {
    pub name: Box<str>,
    pub path: Box<str>,
    /// Seconds (Envoy drops a TTL's fraction); `Some(0)` makes a session cookie.
    pub ttl: Option<u64>,
    /// `attributes`: `(name, value)`, an empty value written as the bare name.
    pub attributes: Vec<(Box<str>, Box<str>)>,
}

impl HashPolicies {
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Combines the inputs' hashes as Envoy does: `None` when no policy found its input.
    pub fn combine(&self, mut hash_of: impl FnMut(&HashInput) -> Option<u64>) -> Option<u64> {
        let mut hash: Option<u64> = None;
        for policy in &self.policies {
            if let Some(new) = hash_of(&policy.input) {
                hash = Some(hash.map_or(0, |h| h.rotate_left(1)) ^ new);
            }
            if policy.terminal && hash.is_some() {
                break;
            }
        }
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(input: HashInput, terminal: bool) -> HashPolicy {
        HashPolicy { input, terminal }
    }

    #[test]
    fn hashes_rotate_and_xor_and_terminal_stops() {
        let policies = HashPolicies {
            policies: vec![
                policy(HashInput::SourceIp, false),
                policy(HashInput::QueryParameter("a".into()), true),
                policy(HashInput::QueryParameter("b".into()), false),
            ],
        };
        let all = |input: &HashInput| match input {
            HashInput::SourceIp => Some(0x8000_0000_0000_0001),
            HashInput::QueryParameter(name) if &**name == "a" => Some(0x10),
            _ => Some(0xFF),
        };
        assert_eq!(policies.combine(all), Some(0x3 ^ 0x10));
        // The terminal policy found nothing, but a hash is there already: Envoy checks the
        // combined hash, so it still stops.
        let no_a = |input: &HashInput| match input {
            HashInput::SourceIp => Some(1),
            HashInput::QueryParameter(name) if &**name == "a" => None,
            _ => Some(0xFF),
        };
        assert_eq!(policies.combine(no_a), Some(1));
        // With no hash yet, a terminal policy that found nothing lets the next one count.
        let only_b = |input: &HashInput| match input {
            HashInput::QueryParameter(name) if &**name == "b" => Some(0xFF),
            _ => None,
        };
        assert_eq!(policies.combine(only_b), Some(0xFF));
        assert_eq!(policies.combine(|_| None), None);
    }
}
