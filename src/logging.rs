//! Logging through `tracing`: Envoy's level names, per-component levels, and live level
//! changes for the admin `/logging` endpoint.
use std::{io::IsTerminal, sync::Arc};

use tracing_subscriber::{
    filter::EnvFilter, layer::SubscriberExt, reload, util::SubscriberInitExt, Registry,
};
use xds_agent::{admin::tracing_level, agent::LogControl};

/// The reloadable filter, handed to the agent's admin server.
pub struct Levels {
    handle: reload::Handle<EnvFilter, Registry>,
}

/// `info` or `info,a:debug,b:warning` (Envoy's `component:level` list) → an EnvFilter spec.
fn filter_spec(spec: &str) -> Result<String, String> {
    let level = |name: &str| tracing_level(name).map_err(|e| e.to_string());
    spec.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| match part.rsplit_once(':') {
            Some((component, name)) => Ok(format!("{component}={}", level(name)?)),
            None => level(part).map(str::to_string),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|parts| parts.join(","))
}

pub fn init(log_level: &str, components: Option<&str>) -> Result<Arc<Levels>, String> {
    let mut spec = log_level.to_string();
    if let Some(components) = components {
        spec = format!("{spec},{components}");
    }
    let filter = EnvFilter::try_new(filter_spec(&spec)?).map_err(|e| e.to_string())?;
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
    Ok(Arc::new(Levels { handle }))
}

impl LogControl for Levels {
    /// `spec` is tracing filter syntax (admin has already mapped Envoy's level names).
    fn set(&self, spec: &str) -> Result<String, String> {
        let filter = EnvFilter::try_new(spec).map_err(|e| e.to_string())?;
        let description = filter.to_string();
        self.handle.reload(filter).map_err(|e| e.to_string())?;
        Ok(description)
    }

    fn current(&self) -> String {
        self.handle
            .with_current(|f| f.to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_levels_and_components() {
        assert_eq!(
            filter_spec("warning,upstream:debug").unwrap(),
            "warn,upstream=debug"
        );
        assert!(filter_spec("loud").unwrap_err().contains("loud"));
        assert_eq!(
            filter_spec("info,xds_agent::agent::xds:debug").unwrap(),
            "info,xds_agent::agent::xds=debug",
            "a module path as the component"
        );
    }
}
