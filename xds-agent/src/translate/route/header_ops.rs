//! Translator: `*_headers_to_add` / `*_headers_to_remove` at one level of a route table
//! (`HeaderValueOption`, `HeaderValue`) → `HeaderMutations`, with Envoy's checks.
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValueOption,
};

use super::Problems;
use model::route::{AppendAction, HeaderAdd, HeaderMutations, HeaderValue};

/// `[request_headers_to_add, response_headers_to_add]` and the matching removals of the
/// message at `path`.
/// A level's four header fields, which the route configuration, virtual hosts, routes and
/// weighted clusters all name alike (`request_headers_to_add`, …), translated.
macro_rules! level_mutations {
    ($proto:expr, $path:expr, $p:expr) => {
        $crate::translate::route::header_ops::mutations(
            [
                &$proto.request_headers_to_add,
                &$proto.response_headers_to_add,
            ],
            [
                &$proto.request_headers_to_remove,
                &$proto.response_headers_to_remove,
            ],
            $path,
            $p,
        )
    };
}
pub(super) use level_mutations;

pub(super) fn mutations(
    [request_add, response_add]: [&Vec<HeaderValueOption>; 2],
    [request_remove, response_remove]: [&Vec<String>; 2],
    path: &str,
    p: &mut Problems,
) -> HeaderMutations {
    HeaderMutations {
        request_add: adds(request_add, &format!("{path}.request_headers_to_add"), p),
        request_remove: removes(
            request_remove,
            &format!("{path}.request_headers_to_remove"),
            p,
        ),
        response_add: adds(response_add, &format!("{path}.response_headers_to_add"), p),
        response_remove: removes(
            response_remove,
            &format!("{path}.response_headers_to_remove"),
            p,
        ),
    }
}

pub(in crate::translate) fn adds(
    options: &[HeaderValueOption],
    path: &str,
    p: &mut Problems,
) -> Vec<HeaderAdd> {
    options
        .iter()
        .enumerate()
        .filter_map(|(i, option)| add(option, &format!("{path}[{i}]"), p))
        .collect()
}

#[allow(deprecated)] // `append` is deprecated in Envoy but still accepted by it.
fn add(option: &HeaderValueOption, path: &str, p: &mut Problems) -> Option<HeaderAdd> {
    let Some(header) = &option.header else {
        p.add(format!("{path}.header"), "header is required");
        return None;
    };
    let name_ok = modifiable_name(&header.key, &format!("{path}.header.key"), "modified", p);
    let value = header_value(&header.value, &format!("{path}.header.value"), p);
    let action = match (&option.append, option.append_action()) {
        (Some(_), action) if action != HeaderAppendAction::AppendIfExistsOrAdd => {
            p.add(
                path,
                "append and append_action cannot both be set; use append_action",
            );
            return None;
        }
        (Some(append), _) if !append.value => AppendAction::OverwriteIfExistsOrAdd,
        (_, HeaderAppendAction::AppendIfExistsOrAdd) => AppendAction::AppendIfExistsOrAdd,
        (_, HeaderAppendAction::AddIfAbsent) => AppendAction::AddIfAbsent,
        (_, HeaderAppendAction::OverwriteIfExistsOrAdd) => AppendAction::OverwriteIfExistsOrAdd,
        (_, HeaderAppendAction::OverwriteIfExists) => AppendAction::OverwriteIfExists,
    };
    Some(HeaderAdd {
        name: header.key.to_ascii_lowercase().into(),
        value: value.filter(|_| name_ok)?,
        action,
        keep_empty: option.keep_empty_value,
    })
}

fn removes(names: &[String], path: &str, p: &mut Problems) -> Vec<String> {
    names
        .iter()
        .enumerate()
        .filter(|(i, name)| modifiable_name(name, &format!("{path}[{i}]"), "removed", p))
        .map(|(_, name)| name.to_ascii_lowercase())
        .collect()
}

/// A header name a route table may add or remove: a token, neither a pseudo-header nor
/// `host` (Envoy's rule).
fn modifiable_name(name: &str, path: &str, verb: &str, p: &mut Problems) -> bool {
    let problem = if name.is_empty() {
        "header name is required".to_string()
    } else if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        format!(":-prefixed or host headers may not be {verb}")
    } else if !name.bytes().all(is_token_byte) {
        format!("{name:?} is not a valid header name")
    } else {
        return true;
    };
    p.add(path, problem);
    false
}

/// RFC 9110 `tchar`.
pub(in crate::translate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header value: Envoy's `%COMMAND%` format (`%%` is a literal `%`), without the control
/// characters a header cannot carry.
fn header_value(value: &str, path: &str, p: &mut Problems) -> Option<HeaderValue> {
    if let Some(bad) = header_value_problem(value) {
        p.add(path, bad);
        return None;
    }
    HeaderValue::compile(value)
        .map_err(|e| p.add(path, e.to_string()))
        .ok()
}

/// Why `value` cannot be sent in a header (NUL, CR or LF), if it cannot.
pub(super) fn header_value_problem(value: &str) -> Option<&'static str> {
    value
        .bytes()
        .any(|b| matches!(b, 0 | b'\r' | b'\n'))
        .then_some("must not contain NUL, CR or LF")
}
