//! `/logging`: lists and changes log levels through [`LogControl`], speaking Envoy's query
//! parameters and tracing's filter syntax (`info,target=debug`) to the control.
use super::{query::Query, reply::Reply};
use crate::agent::LogControl;

/// Why a `/logging` request was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoggingError {
    #[error(
        "unknown log level {0:?}: expected trace, debug, info, warning, error, critical or off"
    )]
    Level(String),
    #[error("invalid paths entry {0:?}: expected <name>:<level>")]
    Path(String),
    #[error("log level change rejected: {0}")]
    Rejected(String),
}

/// An Envoy level name as a tracing level.
pub fn level(name: &str) -> Result<&'static str, LoggingError> {
    Ok(match name {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "critical" => "error",
        "off" => "off",
        other => return Err(LoggingError::Level(other.into())),
    })
}

/// A filter spec as its default level and per-target directives, in order.
#[derive(Debug, Default, PartialEq, Eq)]
struct Spec {
    default: Option<String>,
    targets: Vec<(String, String)>,
}

impl Spec {
    fn parse(spec: &str) -> Self {
        let mut out = Self::default();
        for directive in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.rsplit_once('=') {
                Some((target, level)) => out.set(target, level),
                None => out.default = Some(directive.into()),
            }
        }
        out
    }

    fn set(&mut self, target: &str, level: &str) {
        match self.targets.iter_mut().find(|(t, _)| t == target) {
            Some(entry) => entry.1 = level.into(),
            None => self.targets.push((target.into(), level.into())),
        }
    }

    fn render(&self) -> String {
        self.default
            .iter()
            .cloned()
            .chain(self.targets.iter().map(|(t, l)| format!("{t}={l}")))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Envoy's listing: `active loggers:` then `  <name>: <level>` lines.
    fn listing(&self) -> String {
        let mut out = String::from("active loggers:\n");
        if let Some(level) = &self.default {
            out.push_str(&format!("  default: {level}\n"));
        }
        for (target, level) in &self.targets {
            out.push_str(&format!("  {target}: {level}\n"));
        }
        out
    }
}

/// The filter spec a query asks for, given the current one; `None` when it changes nothing.
fn requested(current: &str, query: &Query) -> Result<Option<String>, LoggingError> {
    if query.is_empty() {
        return Ok(None);
    }
    if let Some(all) = query.get("level") {
        return Ok(Some(level(all)?.into()));
    }
    let mut spec = Spec::parse(current);
    for (key, value) in query.iter() {
        if key == "paths" {
            for entry in value.split(',').filter(|e| !e.is_empty()) {
                let (name, lvl) = entry
                    .rsplit_once(':')
                    .ok_or_else(|| LoggingError::Path(entry.into()))?;
                spec.set(name, level(lvl)?);
            }
        } else {
            spec.set(key, level(value)?);
        }
    }
    Ok(Some(spec.render()))
}

/// `GET /logging` lists; `POST /logging?...` changes, then lists.
pub fn handle(logs: &dyn LogControl, query: &Query) -> Reply {
    let result = requested(&logs.current(), query).and_then(|spec| match spec {
        None => Ok(logs.current()),
        Some(spec) => logs.set(&spec).map_err(LoggingError::Rejected),
    });
    match result {
        Ok(now) => Reply::ok_text(Spec::parse(&now).listing()),
        Err(e) => Reply::bad_request(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(current: &str, query: &str) -> Result<Option<String>, LoggingError> {
        requested(current, &Query::parse(query).unwrap())
    }

    #[test]
    fn level_sets_everything() {
        assert_eq!(
            ask("info,a=debug", "level=warning").unwrap().unwrap(),
            "warn"
        );
        assert_eq!(ask("info", "level=critical").unwrap().unwrap(), "error");
    }

    #[test]
    fn components_keep_the_rest() {
        assert_eq!(
            ask("info,a=debug", "paths=b:trace,a:info")
                .unwrap()
                .unwrap(),
            "info,a=info,b=trace"
        );
        assert_eq!(
            ask("info", "upstream=debug").unwrap().unwrap(),
            "info,upstream=debug"
        );
        assert_eq!(ask("info", "").unwrap(), None);
    }

    #[test]
    fn bad_levels_and_paths_are_errors() {
        assert_eq!(
            ask("info", "level=loud"),
            Err(LoggingError::Level("loud".into()))
        );
        assert_eq!(ask("info", "paths=a"), Err(LoggingError::Path("a".into())));
    }

    #[test]
    fn listing_format() {
        assert_eq!(
            Spec::parse("info,xds_agent=debug").listing(),
            "active loggers:\n  default: info\n  xds_agent: debug\n"
        );
    }
}
