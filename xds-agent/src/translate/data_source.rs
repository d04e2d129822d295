//! Translator: `DataSource` (a file, inline bytes or string, or an environment variable) read
//! into bytes on the agent, with the field path of whatever cannot be read.
use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, DataSource};

use super::TranslateError;

/// The field that holds `source`'s data, for error paths.
pub(super) fn field(source: &DataSource) -> &'static str {
    match &source.specifier {
        Some(Specifier::Filename(_)) => "filename",
        Some(Specifier::InlineBytes(_)) => "inline_bytes",
        Some(Specifier::InlineString(_)) => "inline_string",
        Some(Specifier::EnvironmentVariable(_)) => "environment_variable",
        None => "",
    }
}

/// The bytes `source` names; an unreadable file or unset variable is an error at `path`.
pub(super) fn read(
    source: &DataSource,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<Vec<u8>> {
    let mut fail = |field: &str, message: String| {
        errors.push(TranslateError::new(
            format!("{path}.{field}"),
            None,
            message,
        ));
        None
    };
    match &source.specifier {
        Some(Specifier::Filename(file)) => match std::fs::read(file) {
            Ok(bytes) => Some(bytes),
            Err(e) => fail("filename", format!("cannot read {file}: {e}")),
        },
        Some(Specifier::InlineBytes(bytes)) => Some(bytes.clone()),
        Some(Specifier::InlineString(text)) => Some(text.clone().into_bytes()),
        Some(Specifier::EnvironmentVariable(name)) => match std::env::var(name) {
            Ok(value) => Some(value.into_bytes()),
            Err(_) => fail(
                "environment_variable",
                format!("environment variable {name} is not set"),
            ),
        },
        None => {
            errors.push(TranslateError::new(
                path,
                None,
                "one of filename, inline_bytes, inline_string, environment_variable is required",
            ));
            None
        }
    }
}
