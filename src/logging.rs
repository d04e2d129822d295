//! Logging through `tracing`: Envoy's level names, per-component levels, and live level
//! changes for the admin `/logging` endpoint. Lines go to stderr through a writer thread
//! (`tracing-appender`'s non-blocking writer, lossy): a shard that logs never waits on a slow
//! stderr pipe; past `BUFFERED_LINES` waiting lines, new ones are dropped.
use std::{io::IsTerminal, sync::Arc};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{
    filter::EnvFilter, layer::SubscriberExt, reload, util::SubscriberInitExt, Registry,
};
use xds_agent::{admin::tracing_level, agent::LogControl};

/// Log lines waiting for stderr at most.
const BUFFERED_LINES: usize = 16_384;

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

/// Installs the subscriber; the returned guard writes out the waiting lines when dropped (keep
/// it until the process ends).
pub fn init(
    log_level: &str,
    components: Option<&str>,
) -> Result<(Arc<Levels>, WorkerGuard), String> {
    let mut spec = log_level.to_string();
    if let Some(components) = components {
        spec = format!("{spec},{components}");
    }
    let filter = EnvFilter::try_new(filter_spec(&spec)?).map_err(|e| e.to_string())?;
    let (filter, handle) = reload::Layer::new(filter);
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
    Ok((Arc::new(Levels { handle }), guard))
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
