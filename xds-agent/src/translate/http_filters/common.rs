//! Translator: pieces the HTTP filters share — where an error points, percentages, HTTP
//! statuses and `HeaderValueOption`s (route-level header additions can use the same).
use envoy_types::pb::envoy::{
    config::core::v3::{header_value_option::HeaderAppendAction, HeaderValueOption},
    r#type::v3::{
        fractional_percent::DenominatorType, FractionalPercent as FractionalPercentProto,
    },
};

use crate::translate::{matchers::At, TranslateError};

use model::{
    filters::FractionalPercent,
    route::{AppendAction, HeaderAdd, HeaderValue},
};

/// Where a typed config sits: its path from the bootstrap root and its type URL. Errors name
/// a field below it.
pub(super) struct Site<'a> {
    pub path: &'a str,
    pub type_url: &'a str,
}

impl Site<'_> {
    /// The path of `field` (a dotted path below the config; empty for the config itself).
    pub fn path_of(&self, field: &str) -> String {
        if field.is_empty() {
            self.path.to_string()
        } else {
            format!("{}.{field}", self.path)
        }
    }

    /// Where a matcher at `path` (from `path_of`) sits, for the shared matcher translator.
    pub fn at<'b>(&'b self, path: &'b str) -> At<'b> {
        At {
            path,
            type_url: Some(self.type_url),
        }
    }

    /// An error at `field`.
    pub fn error(&self, field: &str, message: impl Into<String>) -> TranslateError {
        TranslateError::new(self.path_of(field), Some(self.type_url), message)
    }
}

/// A `FractionalPercent`.
pub(super) fn fractional_percent(
    proto: &FractionalPercentProto,
    site: &Site,
    field: &str,
    errors: &mut Vec<TranslateError>,
) -> FractionalPercent {
    let denominator = match DenominatorType::try_from(proto.denominator) {
        Ok(DenominatorType::Hundred) => 100,
        Ok(DenominatorType::TenThousand) => 10_000,
        Ok(DenominatorType::Million) => 1_000_000,
        Err(_) => {
            errors.push(site.error(
                &format!("{field}.denominator"),
                format!("unknown denominator {}", proto.denominator),
            ));
            100
        }
    };
    FractionalPercent {
        numerator: proto.numerator,
        denominator,
    }
}

/// An HTTP status a filter answers with: 100 to 599.
pub(super) fn status_code(
    code: i32,
    site: &Site,
    field: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<u16> {
    if (100..600).contains(&code) {
        Some(code as u16)
    } else {
        errors.push(site.error(field, format!("{code} is not an HTTP status")));
        None
    }
}

/// A header name as shards store it (lower-case), if it is a valid one that may be modified:
/// pseudo-headers and `host` may not (Envoy's rule for header additions).
pub(super) fn modifiable_header_name(
    name: &str,
    site: &Site,
    field: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<String> {
    let problem = if name.is_empty() {
        "header name is required".to_string()
    } else if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        format!("{name}: :-prefixed or host headers may not be modified")
    } else if !name.bytes().all(is_token_byte) {
        format!("{name:?} is not a valid header name")
    } else {
        return Some(name.to_ascii_lowercase());
    };
    errors.push(site.error(field, problem));
    None
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header value from the config: Envoy's `%COMMAND%` format (`%%` is a literal `%`). CR, LF
/// and NUL are invalid.
pub(super) fn header_value(
    value: &str,
    site: &Site,
    field: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<HeaderValue> {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        errors.push(site.error(field, "header values may not contain CR, LF or NUL"));
        return None;
    }
    HeaderValue::compile(value)
        .map_err(|e| errors.push(site.error(field, e.to_string())))
        .ok()
}

/// A `HeaderValueOption` (at `field`).
pub(super) fn header_value_option(
    proto: &HeaderValueOption,
    site: &Site,
    field: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<HeaderAdd> {
    let Some(header) = &proto.header else {
        errors.push(site.error(&format!("{field}.header"), "header is required"));
        return None;
    };
    #[allow(deprecated)]
    let append = proto.append;
    let action = match (append, HeaderAppendAction::try_from(proto.append_action)) {
        (Some(_), Ok(action)) if action != HeaderAppendAction::AppendIfExistsOrAdd => {
            errors.push(site.error(field, "append and append_action are mutually exclusive"));
            return None;
        }
        (Some(append), _) if append.value => AppendAction::AppendIfExistsOrAdd,
        (Some(_), _) => AppendAction::OverwriteIfExistsOrAdd,
        (None, Ok(HeaderAppendAction::AppendIfExistsOrAdd)) => AppendAction::AppendIfExistsOrAdd,
        (None, Ok(HeaderAppendAction::AddIfAbsent)) => AppendAction::AddIfAbsent,
        (None, Ok(HeaderAppendAction::OverwriteIfExistsOrAdd)) => {
            AppendAction::OverwriteIfExistsOrAdd
        }
        (None, Ok(HeaderAppendAction::OverwriteIfExists)) => AppendAction::OverwriteIfExists,
        (None, Err(_)) => {
            errors.push(site.error(
                &format!("{field}.append_action"),
                format!("unknown append_action {}", proto.append_action),
            ));
            return None;
        }
    };
    let name = modifiable_header_name(&header.key, site, &format!("{field}.header.key"), errors);
    let value = header_value(
        &header.value,
        site,
        &format!("{field}.header.value"),
        errors,
    );
    Some(HeaderAdd {
        name: name?.into(),
        value: value?,
        action,
        keep_empty: proto.keep_empty_value,
    })
}

/// A list of `HeaderValueOption`s (at `field`); `None` if any is invalid.
pub(super) fn header_value_options(
    protos: &[HeaderValueOption],
    site: &Site,
    field: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<Vec<HeaderAdd>> {
    let before = errors.len();
    let adds: Vec<_> = protos
        .iter()
        .enumerate()
        .filter_map(|(i, h)| header_value_option(h, site, &format!("{field}[{i}]"), errors))
        .collect();
    (errors.len() == before).then_some(adds)
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::{envoy::config::core::v3::HeaderValue, google::protobuf::BoolValue};

    use super::*;

    const SITE: Site = Site {
        path: "f.typed_config",
        type_url: "type.googleapis.com/x",
    };

    fn option(key: &str, value: &str) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(HeaderValue {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn header_options_map_actions_names_and_values() {
        let mut errors = vec![];
        let mut o = option("X-A", "100%% sure");
        o.append_action = HeaderAppendAction::OverwriteIfExists as i32;
        o.keep_empty_value = true;
        let add = header_value_option(&o, &SITE, "h", &mut errors).unwrap();
        assert_eq!(
            add,
            HeaderAdd {
                name: "x-a".into(),
                value: "100% sure".into(),
                action: AppendAction::OverwriteIfExists,
                keep_empty: true,
            }
        );
        #[allow(deprecated)]
        let legacy = HeaderValueOption {
            append: Some(BoolValue { value: false }),
            ..option("b", "v")
        };
        let add = header_value_option(&legacy, &SITE, "h", &mut errors).unwrap();
        assert_eq!(add.action, AppendAction::OverwriteIfExistsOrAdd);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn invalid_header_options_name_the_field() {
        let mut errors = vec![];
        for (key, value) in [
            (":path", "v"),
            ("Host", "v"),
            ("a b", "v"),
            ("a", "%BOGUS%"),
            ("a", "x\r\ny"),
        ] {
            assert!(header_value_option(&option(key, value), &SITE, "h[0]", &mut errors).is_none());
        }
        #[allow(deprecated)]
        let both = HeaderValueOption {
            append: Some(BoolValue { value: true }),
            append_action: HeaderAppendAction::AddIfAbsent as i32,
            ..option("a", "b")
        };
        assert!(header_value_option(&both, &SITE, "h[1]", &mut errors).is_none());
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "f.typed_config.h[0].header.key",
                "f.typed_config.h[0].header.key",
                "f.typed_config.h[0].header.key",
                "f.typed_config.h[0].header.value",
                "f.typed_config.h[0].header.value",
                "f.typed_config.h[1]",
            ]
        );
        assert!(errors
            .iter()
            .all(|e| e.type_url.as_deref() == Some("type.googleapis.com/x")));
    }

    #[test]
    fn percentages_and_statuses() {
        let mut errors = vec![];
        let p = FractionalPercentProto {
            numerator: 5,
            denominator: DenominatorType::TenThousand as i32,
        };
        assert_eq!(
            fractional_percent(&p, &SITE, "p", &mut errors),
            FractionalPercent {
                numerator: 5,
                denominator: 10_000
            }
        );
        let bad = FractionalPercentProto {
            numerator: 5,
            denominator: 7,
        };
        fractional_percent(&bad, &SITE, "p", &mut errors);
        assert_eq!(status_code(503, &SITE, "s", &mut errors), Some(503));
        assert_eq!(status_code(600, &SITE, "s", &mut errors), None);
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["f.typed_config.p.denominator", "f.typed_config.s"]);
    }
}
