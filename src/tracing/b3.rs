//! Tracing: B3 propagation as Envoy's Zipkin tracer does it — the incoming sampling flag and
//! span context (`b3` single header first, else `x-b3-*`), and the headers sent upstream in
//! the form the request came with (`b3`, else `x-b3-traceid`, `-spanid`, `-parentspanid`,
//! `-sampled`). W3C `traceparent` is neither read nor written (Envoy's default).
use std::fmt::Write;

use crate::stream::headers::Headers;

/// A span's place in its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    /// The high half of a 128-bit trace id (0 for a 64-bit one).
    pub trace_high: u64,
    pub trace_low: u64,
    pub id: u64,
    /// 0: no parent.
    pub parent: u64,
    pub sampled: bool,
}

impl SpanContext {
    /// The trace id in hex: 32 digits when 128-bit, else 16.
    pub fn trace_id(&self, out: &mut String) {
        if self.trace_high != 0 {
            let _ = write!(out, "{:016x}", self.trace_high);
        }
        let _ = write!(out, "{:016x}", self.trace_low);
    }
}

/// The incoming context is malformed: Envoy then makes no span at all.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// The sampling flag the caller sent, if any.
pub fn sampled(headers: &Headers) -> Option<bool> {
    if let Some(b3) = headers.get("b3") {
        let at = match b3.len() {
            1 => 0,
            35 | 52 => 34,
            51 | 68 => 50,
            _ => return None,
        };
        return match b3[at] {
            b'0' => Some(false),
            b'1' | b'd' => Some(true),
            _ => None,
        };
    }
    let flag = headers.get("x-b3-sampled")?;
    Some(&flag[..] == b"1" || &flag[..] == b"true")
}

fn hex(digits: &[u8]) -> Result<u64, Malformed> {
    if digits.is_empty() || digits.len() > 16 {
        return Err(Malformed);
    }
    let text = std::str::from_utf8(digits).map_err(|_| Malformed)?;
    u64::from_str_radix(text, 16).map_err(|_| Malformed)
}

fn is_flag(b: u8) -> bool {
    matches!(b, b'0' | b'1' | b'd')
}

/// The caller's span, if it sent one; `sampled` is the decision the span carries on.
pub fn extract(headers: &Headers, sampled: bool) -> Result<Option<SpanContext>, Malformed> {
    if let Some(b3) = headers.get("b3") {
        return single(b3, sampled);
    }
    let (Some(trace), Some(span)) = (headers.get("x-b3-traceid"), headers.get("x-b3-spanid"))
    else {
        return Ok(None);
    };
    let (trace_high, trace_low) = match trace.len() {
        32 => (hex(&trace[..16])?, hex(&trace[16..])?),
        _ => (0, hex(trace)?),
    };
    let parent = match headers.get("x-b3-parentspanid").filter(|p| !p.is_empty()) {
        Some(p) => hex(p)?,
        None => 0,
    };
    Ok(Some(SpanContext {
        trace_high,
        trace_low,
        id: hex(span)?,
        parent,
        sampled,
    }))
}

/// `b3: {trace}-{span}[-{flag}[-{parent}]]`, or a bare flag (no context).
fn single(b3: &[u8], sampled: bool) -> Result<Option<SpanContext>, Malformed> {
    match b3.len() {
        1 if is_flag(b3[0]) => return Ok(None),
        n if !(33..=68).contains(&n) => return Err(Malformed),
        _ => {}
    }
    let mut parts = b3.split(|b| *b == b'-');
    let trace = parts.next().ok_or(Malformed)?;
    let (trace_high, trace_low) = match trace.len() {
        32 => (hex(&trace[..16])?, hex(&trace[16..])?),
        16 => (0, hex(trace)?),
        _ => return Err(Malformed),
    };
    let id = parts.next().filter(|s| s.len() == 16).ok_or(Malformed)?;
    let parent = match (parts.next(), parts.next()) {
        (None, _) => 0,
        (Some([flag]), None) if is_flag(*flag) => 0,
        (Some([flag]), Some(parent)) if is_flag(*flag) && parent.len() == 16 => hex(parent)?,
        _ => return Err(Malformed),
    };
    if parts.next().is_some() {
        return Err(Malformed);
    }
    Ok(Some(SpanContext {
        trace_high,
        trace_low,
        id: hex(id)?,
        parent,
        sampled,
    }))
}

/// Sets the headers that carry `span` upstream: `b3` when the request came with one, else
/// the `x-b3-*` set.
pub fn inject(span: &SpanContext, headers: &mut Headers) {
    let mut trace = String::with_capacity(32);
    span.trace_id(&mut trace);
    let flag = if span.sampled { "1" } else { "0" };
    if headers.contains("b3") {
        let mut b3 = format!("{trace}-{:016x}-{flag}", span.id);
        if span.parent != 0 {
            let _ = write!(b3, "-{:016x}", span.parent);
        }
        headers.set("b3", b3);
        return;
    }
    headers.set("x-b3-traceid", trace);
    headers.set("x-b3-spanid", format!("{:016x}", span.id));
    if span.parent != 0 {
        headers.set("x-b3-parentspanid", format!("{:016x}", span.parent));
    }
    headers.set("x-b3-sampled", flag);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::default();
        for (n, v) in pairs {
            h.append(n.to_string(), v.to_string());
        }
        h
    }

    #[test]
    fn sampling_flags_from_either_form() {
        assert_eq!(sampled(&headers(&[])), None);
        assert_eq!(sampled(&headers(&[("x-b3-sampled", "1")])), Some(true));
        assert_eq!(sampled(&headers(&[("x-b3-sampled", "true")])), Some(true));
        assert_eq!(sampled(&headers(&[("x-b3-sampled", "0")])), Some(false));
        assert_eq!(sampled(&headers(&[("b3", "0")])), Some(false));
        assert_eq!(sampled(&headers(&[("b3", "d")])), Some(true));
        let b3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90";
        assert_eq!(sampled(&headers(&[("b3", b3)])), Some(false));
        // The single header wins over the multi ones.
        let both = headers(&[("b3", "1"), ("x-b3-sampled", "0")]);
        assert_eq!(sampled(&both), Some(true));
    }

    #[test]
    fn multi_header_contexts() {
        let h = headers(&[
            ("x-b3-traceid", "0000000000000001000000000000000a"),
            ("x-b3-spanid", "000000000000000b"),
            ("x-b3-parentspanid", "000000000000000c"),
        ]);
        let ctx = extract(&h, true).unwrap().unwrap();
        assert_eq!(
            (ctx.trace_high, ctx.trace_low, ctx.id, ctx.parent),
            (1, 10, 11, 12)
        );
        assert_eq!(extract(&headers(&[("x-b3-traceid", "a")]), true), Ok(None));
        let bad = headers(&[("x-b3-traceid", "xyz"), ("x-b3-spanid", "1")]);
        assert_eq!(extract(&bad, true), Err(Malformed));
    }

    #[test]
    fn single_header_contexts() {
        let b3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90";
        let ctx = extract(&headers(&[("b3", b3)]), true).unwrap().unwrap();
        assert_eq!(ctx.trace_high, 0x80f198ee56343ba8);
        assert_eq!(
            (ctx.id, ctx.parent),
            (0xe457b5a2e4d86bd1, 0x05e3ac9a4f6e3b90)
        );
        let short = "64fe8b2a57d3eff7-e457b5a2e4d86bd1";
        let ctx = extract(&headers(&[("b3", short)]), false).unwrap().unwrap();
        assert_eq!((ctx.trace_high, ctx.parent, ctx.sampled), (0, 0, false));
        assert_eq!(extract(&headers(&[("b3", "1")]), true), Ok(None));
        for bad in [
            "x",
            "64fe8b2a57d3eff7-e457b5a2e4d86bd1-",
            "64fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
        ] {
            assert_eq!(
                extract(&headers(&[("b3", bad)]), true),
                Err(Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn injection_keeps_the_callers_form() {
        let span = SpanContext {
            trace_high: 1,
            trace_low: 2,
            id: 3,
            parent: 4,
            sampled: true,
        };
        let mut multi = headers(&[]);
        inject(&span, &mut multi);
        let text = |h: &Headers, n: &str| String::from_utf8(h.get(n).unwrap().to_vec()).unwrap();
        assert_eq!(
            text(&multi, "x-b3-traceid"),
            "00000000000000010000000000000002"
        );
        assert_eq!(text(&multi, "x-b3-spanid"), "0000000000000003");
        assert_eq!(text(&multi, "x-b3-parentspanid"), "0000000000000004");
        assert_eq!(text(&multi, "x-b3-sampled"), "1");
        let mut single = headers(&[("b3", "1")]);
        inject(
            &SpanContext {
                trace_high: 0,
                parent: 0,
                sampled: false,
                ..span
            },
            &mut single,
        );
        assert_eq!(text(&single, "b3"), "0000000000000002-0000000000000003-0");
        assert!(!single.contains("x-b3-traceid"));
    }
}
