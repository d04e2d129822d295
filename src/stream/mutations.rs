//! Stream layer: header mutations from route configuration (`*_headers_to_add` with Envoy's
//! append actions, `*_headers_to_remove`) and filters, with `%COMMAND%` values rendered for
//! the stream in flight.
use bytes::Bytes;
use model::{
    access_log::Format,
    route::{AppendAction, HeaderAdd, HeaderValue},
};

use super::headers::{Headers, RequestHead, ResponseHead};

/// Renders a `%COMMAND%` header value for the stream in flight, from its heads as they are now
/// (the connection manager reads them as its access log does).
pub trait Formatter {
    fn render(
        &self,
        format: &Format,
        request: &RequestHead,
        response: Option<&ResponseHead>,
        out: &mut Vec<u8>,
    );

    /// `value` for this stream: a literal as it is (no copy), a format rendered.
    fn value(
        &self,
        value: &HeaderValue,
        request: &RequestHead,
        response: Option<&ResponseHead>,
    ) -> Bytes {
        match value {
            HeaderValue::Literal(bytes) => bytes.clone(),
            HeaderValue::Formatted(format) => {
                let mut out = Vec::new();
                self.render(format, request, response, &mut out);
                out.into()
            }
        }
    }
}

/// One level's request additions (route table levels): every value is rendered from the
/// request as it was before the level, then applied (Envoy's order).
pub fn add_to_request(request: &mut RequestHead, adds: &[HeaderAdd], formatter: &dyn Formatter) {
    let rendered = render(adds, |format, out| {
        formatter.render(format, request, None, out)
    });
    add(&mut request.headers, adds, rendered);
}

/// One level's response additions, rendered from the response as it was before the level.
pub fn add_to_response(
    request: &RequestHead,
    response: &mut ResponseHead,
    adds: &[HeaderAdd],
    formatter: &dyn Formatter,
) {
    let rendered = render(adds, |format, out| {
        formatter.render(format, request, Some(response), out)
    });
    add(&mut response.headers, adds, rendered);
}

/// The values of `adds`' formatted entries, in order (no allocation when all are literal).
fn render(adds: &[HeaderAdd], mut render: impl FnMut(&Format, &mut Vec<u8>)) -> Vec<Bytes> {
    adds.iter()
        .filter_map(|add| match &add.value {
            HeaderValue::Literal(_) => None,
            HeaderValue::Formatted(format) => {
                let mut out = Vec::new();
                render(format, &mut out);
                Some(out.into())
            }
        })
        .collect()
}

/// Applies one level's adds as Envoy does: what each does (by its action, and by whether its
/// header was present) is decided on the headers as they were before the level; overwrites go
/// first, then appends. Removals are applied by the caller first, as Envoy removes before it
/// adds. Entries past the 64th are applied in order on the headers as they are then.
fn add(headers: &mut Headers, adds: &[HeaderAdd], rendered: Vec<Bytes>) {
    let (mut applies, mut sets) = (0u64, 0u64);
    for (i, (add, value)) in values(adds, &rendered).enumerate().take(64) {
        if let Some(set) = action(add, value, headers) {
            applies |= 1 << i;
            sets |= u64::from(set) << i;
        }
    }
    for (i, (add, value)) in values(adds, &rendered).enumerate().take(64) {
        if sets & 1 << i != 0 {
            headers.set(add.name.clone(), value.clone());
        }
    }
    for (i, (add, value)) in values(adds, &rendered).enumerate() {
        if i >= 64 {
            add_header(add, value.clone(), headers);
        } else if applies & !sets & 1 << i != 0 {
            headers.append(add.name.clone(), value.clone());
        }
    }
}

/// Each add with its value: a literal's own bytes, a format's from `rendered` (in order).
fn values<'a>(
    adds: &'a [HeaderAdd],
    rendered: &'a [Bytes],
) -> impl Iterator<Item = (&'a HeaderAdd, &'a Bytes)> {
    let mut rendered = rendered.iter();
    adds.iter().map(move |add| match &add.value {
        HeaderValue::Literal(bytes) => (add, bytes),
        HeaderValue::Formatted(_) => (add, rendered.next().expect("a value per format")),
    })
}

/// What one add does to headers as they are: `Some(true)` sets, `Some(false)` appends.
fn action(add: &HeaderAdd, value: &[u8], headers: &Headers) -> Option<bool> {
    if value.is_empty() && !add.keep_empty {
        return None;
    }
    let present = || headers.contains_bytes(&add.name);
    match add.action {
        AppendAction::AppendIfExistsOrAdd => Some(false),
        AppendAction::AddIfAbsent => (!present()).then_some(false),
        AppendAction::OverwriteIfExistsOrAdd => Some(true),
        AppendAction::OverwriteIfExists => present().then_some(true),
    }
}

/// Applies one `HeaderValueOption` with its value for this stream (Envoy's `append_action` and
/// `keep_empty_value`), on the headers as they are (filters apply their operations in order).
pub fn add_header(add: &HeaderAdd, value: Bytes, headers: &mut Headers) {
    match action(add, &value, headers) {
        Some(true) => headers.set(add.name.clone(), value),
        Some(false) => headers.append(add.name.clone(), value),
        None => {}
    }
}

/// Removes every header named in `names` (lower-case).
pub fn remove(headers: &mut Headers, names: &[String]) {
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::http::test_support::{all, request, TestValues};

    fn add_one(action: AppendAction, value: &str) -> HeaderAdd {
        HeaderAdd {
            name: "x-a".into(),
            value: HeaderValue::compile(value).unwrap(),
            action,
            keep_empty: false,
        }
    }

    fn level(req: &mut RequestHead, adds: &[HeaderAdd]) {
        add_to_request(req, adds, &TestValues);
    }

    #[test]
    fn append_actions_follow_envoy() {
        let mut req = request("GET", "/", &[("x-a", "1")]);
        level(&mut req, &[add_one(AppendAction::AppendIfExistsOrAdd, "2")]);
        assert_eq!(all(&req.headers, "x-a"), ["1", "2"]);
        level(
            &mut req,
            &[add_one(AppendAction::OverwriteIfExistsOrAdd, "3")],
        );
        assert_eq!(all(&req.headers, "x-a"), ["3"]);
        level(&mut req, &[add_one(AppendAction::AddIfAbsent, "4")]);
        assert_eq!(all(&req.headers, "x-a"), ["3"]);
        req.headers.remove("x-a");
        level(&mut req, &[add_one(AppendAction::OverwriteIfExists, "5")]);
        assert!(!req.headers.contains("x-a"));
        level(&mut req, &[add_one(AppendAction::AddIfAbsent, "")]);
        assert!(
            !req.headers.contains("x-a"),
            "empty values are skipped unless keep_empty_value"
        );
    }

    #[test]
    fn a_level_decides_and_renders_on_the_headers_before_it() {
        let mut req = request("GET", "/p", &[("x-in", "a")]);
        level(
            &mut req,
            &[
                add_one(AppendAction::AddIfAbsent, "1"),
                add_one(AppendAction::AddIfAbsent, "2"),
                HeaderAdd {
                    name: "x-in".into(),
                    ..add_one(AppendAction::OverwriteIfExistsOrAdd, "b")
                },
                HeaderAdd {
                    name: "x-copy".into(),
                    ..add_one(
                        AppendAction::AppendIfExistsOrAdd,
                        "%REQ(x-in)% %PROTOCOL% 100%%",
                    )
                },
                HeaderAdd {
                    name: "x-none".into(),
                    ..add_one(AppendAction::AppendIfExistsOrAdd, "%REQ(x-absent)%")
                },
            ],
        );
        // Both add-if-absent entries saw no x-a; the copy read x-in before it was overwritten.
        assert_eq!(all(&req.headers, "x-a"), ["1", "2"]);
        assert_eq!(all(&req.headers, "x-in"), ["b"]);
        assert_eq!(all(&req.headers, "x-copy"), ["a HTTP/1.1 100%"]);
        assert!(!req.headers.contains("x-none"));
    }

    #[test]
    fn literal_values_share_the_snapshot_bytes() {
        let add = add_one(AppendAction::AppendIfExistsOrAdd, "v");
        let HeaderValue::Literal(bytes) = &add.value else {
            panic!("a value without commands is literal")
        };
        let mut req = request("GET", "/", &[]);
        level(&mut req, std::slice::from_ref(&add));
        assert_eq!(req.headers.get("x-a").unwrap().as_ptr(), bytes.as_ptr());
    }
}
