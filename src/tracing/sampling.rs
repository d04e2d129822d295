//! Tracing: the per-request trace decision, made as Envoy's UUID request-id extension makes
//! it — kept in `x-request-id` (its 15th character, so every proxy of the request agrees),
//! forced by `x-client-trace-id` (`client_sampling`) or `x-envoy-force-trace`, else taken by
//! `random_sampling` from the id, and capped by `overall_sampling`.
use model::tracing::{HttpTracing, SAMPLING_DENOMINATOR};

use crate::stream::headers::Headers;

/// Why a request is traced (Envoy's trace reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NotTraceable,
    Sampling,
    ServiceForced,
    ClientForced,
}

/// Where a UUID keeps the reason: the version digit (`4` when not traced).
const REASON_AT: usize = 14;
const UUID_LENGTH: usize = 36;

impl Reason {
    fn of(id: &[u8]) -> Reason {
        match id.get(REASON_AT).filter(|_| id.len() == UUID_LENGTH) {
            Some(b'9') => Reason::Sampling,
            Some(b'a') => Reason::ServiceForced,
            Some(b'b') => Reason::ClientForced,
            _ => Reason::NotTraceable,
        }
    }

    fn digit(self) -> u8 {
        match self {
            Reason::NotTraceable => b'4',
            Reason::Sampling => b'9',
            Reason::ServiceForced => b'a',
            Reason::ClientForced => b'b',
        }
    }
}

/// Whether `share` (parts per ten thousand) takes `value`.
fn takes(share: u32, value: u64) -> bool {
    value % u64::from(SAMPLING_DENOMINATOR) < u64::from(share)
}

/// The id as a number: its first 8 hex digits.
fn id_number(id: &[u8]) -> Option<u64> {
    let digits = std::str::from_utf8(id.get(..8)?).ok()?;
    u64::from_str_radix(digits, 16).ok()
}

/// Decides whether the request is traced; with `pack_trace_reason` the decision is written
/// into its `x-request-id`. A request without a usable id is traced only when forced.
pub fn decide(tracing: &HttpTracing, headers: &mut Headers) -> bool {
    let id = headers.get("x-request-id");
    let number = match tracing.request_id_sampling {
        true => id.and_then(|id| id_number(id)),
        false => Some(fastrand::u64(..)),
    };
    let Some(number) = number else {
        return false;
    };
    let before = id.map_or(Reason::NotTraceable, |id| Reason::of(id));
    let mut reason = before;
    if reason == Reason::NotTraceable {
        if headers.contains("x-client-trace-id")
            && takes(tracing.client_sampling, fastrand::u64(..))
        {
            reason = Reason::ClientForced;
        } else if headers.contains("x-envoy-force-trace") {
            reason = Reason::ServiceForced;
        } else if takes(tracing.random_sampling, number) {
            reason = Reason::Sampling;
        }
    }
    if reason != Reason::NotTraceable && !takes(tracing.overall_sampling, number) {
        reason = Reason::NotTraceable;
    }
    if reason != before && tracing.pack_trace_reason && tracing.request_id_sampling {
        if let Some(id) = headers
            .get("x-request-id")
            .filter(|id| id.len() == UUID_LENGTH)
        {
            let mut packed = id.to_vec();
            packed[REASON_AT] = reason.digit();
            headers.set("x-request-id", packed);
        }
    }
    reason != Reason::NotTraceable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracing(client: u32, random: u32, overall: u32) -> HttpTracing {
        HttpTracing {
            client_sampling: client,
            random_sampling: random,
            overall_sampling: overall,
            max_path_tag_length: 256,
            custom_tags: Vec::new(),
            zipkin: None,
            pack_trace_reason: true,
            request_id_sampling: true,
        }
    }

    fn with_id(id: &str, extra: &[(&str, &str)]) -> Headers {
        let mut headers = Headers::default();
        headers.append("x-request-id", id.to_string());
        for (name, value) in extra {
            headers.append(name.to_string(), value.to_string());
        }
        headers
    }

    fn id(headers: &Headers) -> &str {
        std::str::from_utf8(headers.get("x-request-id").unwrap()).unwrap()
    }

    #[test]
    fn random_sampling_reads_the_ids_first_digits() {
        // 0x00000063 = 99: inside 1 % (100 of 10,000); 0x00000064 = 100 is not.
        let mut inside = with_id("00000063-0000-4000-8000-000000000000", &[]);
        assert!(decide(&tracing(10_000, 100, 10_000), &mut inside));
        assert_eq!(id(&inside), "00000063-0000-9000-8000-000000000000");
        let mut outside = with_id("00000064-0000-4000-8000-000000000000", &[]);
        assert!(!decide(&tracing(10_000, 100, 10_000), &mut outside));
        assert_eq!(id(&outside), "00000064-0000-4000-8000-000000000000");
    }

    #[test]
    fn forced_and_kept_reasons_and_the_overall_cap() {
        let none = tracing(10_000, 0, 10_000);
        let mut forced = with_id(
            "ffffffff-0000-4000-8000-000000000000",
            &[("x-envoy-force-trace", "1")],
        );
        assert!(decide(&none, &mut forced));
        assert_eq!(&id(&forced)[14..15], "a");
        let mut client = with_id(
            "ffffffff-0000-4000-8000-000000000000",
            &[("x-client-trace-id", "c")],
        );
        assert!(decide(&none, &mut client));
        assert_eq!(&id(&client)[14..15], "b");
        // A reason already in the id is kept.
        let mut kept = with_id("ffffffff-0000-9000-8000-000000000000", &[]);
        assert!(decide(&none, &mut kept));
        // overall_sampling 0 clears it.
        let mut capped = with_id("ffffffff-0000-9000-8000-000000000000", &[]);
        assert!(!decide(&tracing(10_000, 10_000, 0), &mut capped));
        assert_eq!(&id(&capped)[14..15], "4");
    }

    #[test]
    fn ids_that_are_not_uuids_are_not_rewritten() {
        let mut short = with_id("0000abcd", &[]);
        assert!(decide(&tracing(10_000, 10_000, 10_000), &mut short));
        assert_eq!(id(&short), "0000abcd");
        let mut junk = with_id("zz", &[]);
        assert!(!decide(&tracing(10_000, 10_000, 10_000), &mut junk));
    }
}
