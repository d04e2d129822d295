//! `json_format`: a configured JSON object whose string values are `%COMMAND%` formats, compiled on the agent and rendered as one JSON line on shards.
//!
//! Envoy 1.40's rendering, checked against it: keys sorted at every level, no whitespace, and
//! a newline after the object. A string that is exactly one command renders typed — a number
//! for the numeric commands (`%RESPONSE_CODE%`, `%DURATION%`, `%BYTES_SENT%`, …), a string
//! otherwise, `null` without a value; a string with text around its commands is a string in
//! which a missing value is `-`. Under `omit_empty_values` a `null` member or list item is
//! left out, and so is a nested object left with no member (an empty list stays). Literal
//! numbers, booleans and `null` are written as configured.
use std::io::Write;

use super::{render_command, Command, ConnectionRecord, Format, FormatError, Part};

/// A `json_format` value as configured (a `google.protobuf.Value`).
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    List(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

/// Why a `json_format` does not compile: the dotted key path (`a.b`, `list[1]`) of the string
/// that failed, and its error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {error}")]
pub struct JsonFormatError {
    pub key: String,
    pub error: FormatError,
}

/// A compiled `json_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonFormat {
    members: Vec<Member>,
    omit_empty: bool,
    reads_tls: bool,
}

/// An object member: its key already written as `"key":`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    key: Box<str>,
    value: Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// JSON written as is: a literal number, boolean, or a string without commands.
    Literal(Box<str>),
    /// A literal `null` (left out under `omit_empty_values`, as a missing value).
    Null,
    /// A string that is exactly one command (with its `:N` limit): a typed value.
    Command(Command, Option<usize>),
    /// A string with text and commands: always a string.
    Text(Format),
    Object(Vec<Member>),
    List(Vec<Node>),
}

impl JsonFormat {
    /// Compiles the object `fields`; `omit_empty` is `omit_empty_values`.
    pub fn compile(
        fields: &[(String, JsonTemplate)],
        omit_empty: bool,
    ) -> Result<Self, JsonFormatError> {
        let mut reads_tls = false;
        let members = object(fields, "", omit_empty, &mut reads_tls)?;
        Ok(Self {
            members,
            omit_empty,
            reads_tls,
        })
    }

    /// Whether a command reads the downstream connection's TLS.
    pub fn reads_tls(&self) -> bool {
        self.reads_tls
    }

    /// Appends the object rendered for `record`, and a newline, to `out`.
    pub fn render(&self, record: &ConnectionRecord, out: &mut Vec<u8>) {
        let renderer = Renderer {
            record,
            omit_empty: self.omit_empty,
        };
        renderer.object(&self.members, out);
        out.push(b'\n');
    }
}

fn object(
    fields: &[(String, JsonTemplate)],
    at: &str,
    omit_empty: bool,
    reads_tls: &mut bool,
) -> Result<Vec<Member>, JsonFormatError> {
    let mut members = fields
        .iter()
        .map(|(key, value)| {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            let mut written = Vec::with_capacity(key.len() + 3);
            write_string(key.as_bytes(), &mut written);
            written.push(b':');
            Ok((
                key.as_str(),
                Member {
                    key: into_text(written),
                    value: node(value, &path, omit_empty, reads_tls)?,
                },
            ))
        })
        .collect::<Result<Vec<_>, JsonFormatError>>()?;
    members.sort_by_key(|(key, _)| *key);
    Ok(members.into_iter().map(|(_, member)| member).collect())
}

fn node(
    value: &JsonTemplate,
    at: &str,
    omit_empty: bool,
    reads_tls: &mut bool,
) -> Result<Node, JsonFormatError> {
    Ok(match value {
        JsonTemplate::Null => Node::Null,
        JsonTemplate::Bool(b) => Node::Literal(b.to_string().into()),
        JsonTemplate::Number(n) => Node::Literal(number(*n).into()),
        JsonTemplate::Object(fields) => Node::Object(object(fields, at, omit_empty, reads_tls)?),
        JsonTemplate::List(items) => Node::List(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| node(item, &format!("{at}[{i}]"), omit_empty, reads_tls))
                .collect::<Result<_, _>>()?,
        ),
        JsonTemplate::String(text) => {
            let error = |error| JsonFormatError {
                key: at.to_string(),
                error,
            };
            let format = Format::compile(text).map_err(error)?;
            *reads_tls |= format.reads_tls();
            if let Some(literal) = format.literal() {
                let mut written = Vec::with_capacity(literal.len() + 2);
                write_string(literal.as_bytes(), &mut written);
                Node::Literal(into_text(written))
            } else if let [Part::Command(command, limit)] = &format.parts[..] {
                Node::Command(command.clone(), *limit)
            } else if omit_empty {
                Node::Text(format.omitting_empty())
            } else {
                Node::Text(format)
            }
        }
    })
}

/// A literal number as JSON: integral values without a fraction.
fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// Bytes this module wrote itself (valid UTF-8) as text.
fn into_text(bytes: Vec<u8>) -> Box<str> {
    String::from_utf8(bytes)
        .expect("JSON written here is UTF-8")
        .into_boxed_str()
}

struct Renderer<'r, 'a> {
    record: &'r ConnectionRecord<'a>,
    omit_empty: bool,
}

impl Renderer<'_, '_> {
    /// Writes `{…}`; whether it wrote a member.
    fn object(&self, members: &[Member], out: &mut Vec<u8>) -> bool {
        out.push(b'{');
        let mut any = false;
        for member in members {
            self.entry(Some(&member.key), &member.value, &mut any, out);
        }
        out.push(b'}');
        any
    }

    /// Writes one member (`key` given) or list item, after a comma when `any` came before;
    /// cuts it again when its value is left out.
    fn entry(&self, key: Option<&str>, node: &Node, any: &mut bool, out: &mut Vec<u8>) {
        let mark = out.len();
        if *any {
            out.push(b',');
        }
        out.extend_from_slice(key.unwrap_or_default().as_bytes());
        if self.value(node, out) {
            *any = true;
        } else {
            out.truncate(mark);
        }
    }

    /// Writes one value; `false` when it is to be left out (then what it wrote is cut by the
    /// caller).
    fn value(&self, node: &Node, out: &mut Vec<u8>) -> bool {
        match node {
            Node::Literal(json) => {
                out.extend_from_slice(json.as_bytes());
                true
            }
            Node::Null => {
                out.extend_from_slice(b"null");
                !self.omit_empty
            }
            Node::Text(format) => {
                let start = out.len();
                format.render(self.record, out);
                quote_from(start, out);
                true
            }
            Node::Command(command, limit) => {
                let start = out.len();
                if !render_command(command, self.record, out) {
                    out.truncate(start);
                    out.extend_from_slice(b"null");
                    return !self.omit_empty;
                }
                if let Some(limit) = limit {
                    out.truncate(start + (out.len() - start).min(*limit));
                }
                if !(command.is_number() && limit.is_none()) {
                    quote_from(start, out);
                }
                true
            }
            Node::Object(members) => self.object(members, out) || !self.omit_empty,
            Node::List(items) => {
                out.push(b'[');
                let mut any = false;
                for item in items {
                    self.entry(None, item, &mut any, out);
                }
                out.push(b']');
                true
            }
        }
    }
}

/// Turns the raw bytes rendered from `start` on into a JSON string. Only text that needs
/// escaping (rare: quotes, backslashes, control bytes, invalid UTF-8) is copied.
fn quote_from(start: usize, out: &mut Vec<u8>) {
    let raw = &out[start..];
    let plain = !raw.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20)
        && std::str::from_utf8(raw).is_ok();
    if plain {
        out.insert(start, b'"');
        out.push(b'"');
    } else {
        let raw = out.split_off(start);
        write_string(&raw, out);
    }
}

/// Writes `raw` as a JSON string: `"` and `\` escaped, `\n`, `\r`, `\t`, `\b`, `\f` by name,
/// other control bytes as `\u00XX`; invalid UTF-8 becomes U+FFFD.
pub fn write_string(raw: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for c in String::from_utf8_lossy(raw).chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{JsonTemplate as T, *};
    use crate::access_log::tests::{exchange, http_record};

    /// Renders `fields` for a 404 to `GET /a"b` whose `x-esc` holds characters JSON escapes,
    /// 12 ms long, 3 bytes in and 20 out, with no upstream host or cluster.
    fn render(fields: &[(&str, T)], omit_empty: bool) -> String {
        let mut exchange = exchange();
        exchange.code = 404;
        exchange.request = vec![(":path", "/a\"b"), ("x-esc", "q\"\\/\u{1}\t\u{e9}\u{7f}")];
        let record = ConnectionRecord {
            duration: Duration::from_millis(12),
            bytes_received: 3,
            bytes_sent: 20,
            upstream_host: None,
            upstream_cluster: None,
            ..http_record(&exchange)
        };
        let format = JsonFormat::compile(&object(fields), omit_empty).unwrap();
        let mut out = b"prefix ".to_vec();
        format.render(&record, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn s(text: &str) -> T {
        T::String(text.into())
    }

    fn object(fields: &[(&str, T)]) -> Vec<(String, T)> {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn single_commands_render_typed_and_keys_sorted() {
        let out = render(
            &[
                ("status", s("%RESPONSE_CODE%")),
                ("duration", s("%DURATION%")),
                (
                    "bytes",
                    T::List(vec![s("%BYTES_RECEIVED%"), s("%BYTES_SENT%")]),
                ),
                ("id", s("%CONNECTION_ID%")),
                ("path", s("%REQ(:PATH)%")),
                ("short", s("%REQ(:PATH):2%")),
                ("flags", s("%RESPONSE_FLAGS%")),
                ("start", s("%START_TIME%")),
                ("missing", s("%UPSTREAM_HOST%")),
                ("text", s("code=%RESPONSE_CODE% host=%UPSTREAM_HOST%")),
            ],
            false,
        );
        assert_eq!(
            out,
            "prefix {\"bytes\":[3,20],\"duration\":12,\"flags\":\"-\",\"id\":7,\
             \"missing\":null,\"path\":\"/a\\\"b\",\"short\":\"/a\",\
             \"start\":\"2024-01-02T03:04:05.678Z\",\"status\":404,\
             \"text\":\"code=404 host=-\"}\n"
        );
    }

    #[test]
    fn literals_and_nesting() {
        let out = render(
            &[
                ("z", T::Object(object(&[("b", s("x")), ("a", T::Null)]))),
                ("n", T::Number(7.0)),
                ("f", T::Number(42.5)),
                ("neg", T::Number(-3.0)),
                ("t", T::Bool(true)),
                ("empty", s("")),
                ("pct", s("100%%")),
                ("list", T::List(vec![])),
            ],
            false,
        );
        assert_eq!(
            out,
            "prefix {\"empty\":\"\",\"f\":42.5,\"list\":[],\"n\":7,\"neg\":-3,\
             \"pct\":\"100%\",\"t\":true,\"z\":{\"a\":null,\"b\":\"x\"}}\n"
        );
    }

    #[test]
    fn strings_are_escaped_as_envoy() {
        let out = render(
            &[("e", s("%REQ(x-esc)%")), ("k\"", s("<%REQ(x-esc)%>"))],
            false,
        );
        assert_eq!(
            out,
            "prefix {\"e\":\"q\\\"\\\\/\\u0001\\t\u{e9}\u{7f}\",\
             \"k\\\"\":\"<q\\\"\\\\/\\u0001\\t\u{e9}\u{7f}>\"}\n"
        );
    }

    #[test]
    fn omitting_empty_values_drops_nulls_and_emptied_objects() {
        let fields = [
            ("missing", s("%UPSTREAM_HOST%")),
            ("code", s("%RESPONSE_CODE%")),
            ("mid", s("a=%UPSTREAM_HOST%")),
            (
                "nested",
                T::Object(object(&[("m", s("%UPSTREAM_CLUSTER%"))])),
            ),
            ("list", T::List(vec![s("%UPSTREAM_HOST%")])),
            ("literal_null", T::Null),
        ];
        assert_eq!(
            render(&fields, true),
            "prefix {\"code\":404,\"list\":[],\"mid\":\"a=\"}\n"
        );
        assert_eq!(
            render(&fields, false),
            "prefix {\"code\":404,\"list\":[null],\"literal_null\":null,\"mid\":\"a=-\",\
             \"missing\":null,\"nested\":{\"m\":null}}\n"
        );
        assert_eq!(
            render(&[("only", s("%UPSTREAM_HOST%"))], true),
            "prefix {}\n"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let fields = object(&[(
            "outer",
            T::Object(object(&[("l", T::List(vec![s("ok"), s("%NOPE%")]))])),
        )]);
        let err = JsonFormat::compile(&fields, false).unwrap_err();
        assert_eq!(err.key, "outer.l[1]");
        assert!(err.to_string().contains("%NOPE%"));
    }

    #[test]
    fn tls_commands_are_noticed() {
        let fields = object(&[(
            "a",
            T::Object(object(&[("v", s("%DOWNSTREAM_TLS_VERSION%"))])),
        )]);
        assert!(JsonFormat::compile(&fields, false).unwrap().reads_tls());
        let fields = object(&[("a", s("%DURATION%"))]);
        assert!(!JsonFormat::compile(&fields, false).unwrap().reads_tls());
    }
}
