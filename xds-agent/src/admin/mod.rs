//! Admin server: Envoy's admin paths and output formats, served on the agent thread.
//!
//! One hyper HTTP/1.1 connection task per client. A handler takes the state lock, renders its
//! whole reply synchronously and drops the lock before anything is awaited.
mod certs;
mod clusters;
mod config_dump;
mod dynamic_dump;
#[cfg(test)]
pub(crate) mod fixture;
mod listeners;
mod logging;
pub use logging::{level as tracing_level, LoggingError};
mod prometheus;
mod query;
mod reply;
mod server_info;
mod stats;

use std::{convert::Infallible, sync::Arc};

use hyper::{body::Incoming, server::conn::http1, service::service_fn, Method, Request};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::mpsc::UnboundedSender};

use self::{query::Query, reply::Reply};
use crate::agent::{AgentCommand, AgentState, LogControl, SharedState};

/// What the admin server needs from the agent.
#[derive(Clone)]
pub struct AdminContext {
    pub state: SharedState,
    pub commands: UnboundedSender<AgentCommand>,
    pub logs: Arc<dyn LogControl>,
}

/// Accepts admin connections forever, one task per connection.
pub async fn serve(listener: TcpListener, ctx: AdminContext) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let mut done = None;
                let reply = handle(&ctx, request.method(), request.uri(), &mut done);
                // Dumps may have decoded Envoy's descriptor pool; do not keep it resident.
                if let Ok(state) = ctx.state.lock() {
                    state.release_memory();
                }
                async move {
                    if let Some(done) = done {
                        // Bounded: a shard that never answers does not hang the admin.
                        let _ = tokio::time::timeout(COMMAND_WAIT, done).await;
                    }
                    Ok::<_, Infallible>(reply.into_response())
                }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("admin connection ended: {e}");
            }
        });
    }
}

/// The admin endpoints, in the order `/help` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Help,
    Ready,
    ServerInfo,
    Stats,
    StatsPrometheus,
    ConfigDump,
    Certs,
    Clusters,
    Listeners,
    Logging,
    HealthcheckFail,
    HealthcheckOk,
    DrainListeners,
    QuitQuitQuit,
}

/// Path, endpoint, whether it changes server state (POST only), help text.
const ENDPOINTS: &[(&str, Endpoint, bool, &str)] = &[
    ("/", Endpoint::Help, false, "this list"),
    ("/help", Endpoint::Help, false, "this list"),
    (
        "/ready",
        Endpoint::Ready,
        false,
        "LIVE (200) or the server state (503)",
    ),
    (
        "/server_info",
        Endpoint::ServerInfo,
        false,
        "version, state, uptime, options, node (JSON)",
    ),
    (
        "/stats",
        Endpoint::Stats,
        false,
        "stats; ?filter=<regex> ?usedonly ?type=Counters|Gauges|Histograms ?format=json|prometheus",
    ),
    (
        "/stats/prometheus",
        Endpoint::StatsPrometheus,
        false,
        "stats in Prometheus text format; ?filter ?usedonly",
    ),
    (
        "/config_dump",
        Endpoint::ConfigDump,
        false,
        "current config (JSON); ?include_eds ?resource=<repeated field> ?mask=<paths>",
    ),
    (
        "/certs",
        Endpoint::Certs,
        false,
        "certificates of the TLS contexts in use (JSON)",
    ),
    (
        "/clusters",
        Endpoint::Clusters,
        false,
        "upstream clusters and hosts; ?format=json",
    ),
    (
        "/listeners",
        Endpoint::Listeners,
        false,
        "listeners and their addresses; ?format=json",
    ),
    (
        "/logging",
        Endpoint::Logging,
        true,
        "list log levels; POST ?level=<level> ?paths=<name>:<level>,... ?<name>=<level>",
    ),
    (
        "/healthcheck/fail",
        Endpoint::HealthcheckFail,
        true,
        "fail health checks (/ready reports DRAINING)",
    ),
    (
        "/healthcheck/ok",
        Endpoint::HealthcheckOk,
        true,
        "undo /healthcheck/fail",
    ),
    (
        "/drain_listeners",
        Endpoint::DrainListeners,
        true,
        "drain listeners; ?inboundonly ?graceful",
    ),
    (
        "/quitquitquit",
        Endpoint::QuitQuitQuit,
        true,
        "drain and exit",
    ),
];

/// Routes one request to its endpoint and renders the reply.
/// How long a command's reply waits for the agent to carry it out.
const COMMAND_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The reply to a request; `done` is set for a command whose reply should wait until the
/// agent has carried it out.
fn handle(
    ctx: &AdminContext,
    method: &Method,
    uri: &hyper::Uri,
    done: &mut Option<tokio::sync::oneshot::Receiver<()>>,
) -> Reply {
    let query = match Query::parse(uri.query().unwrap_or("")) {
        Ok(query) => query,
        Err(e) => return Reply::bad_request(e.to_string()),
    };
    let Some(&(_, endpoint, mutates, _)) = ENDPOINTS.iter().find(|e| e.0 == uri.path()) else {
        return Reply::text(
            hyper::StatusCode::NOT_FOUND,
            format!("invalid path. {}", help()),
        );
    };
    // Listing log levels changes nothing, so plain `GET /logging` is allowed.
    let listing_logs = endpoint == Endpoint::Logging && query.is_empty();
    if mutates && method != Method::POST && !listing_logs {
        return Reply::text(
            hyper::StatusCode::METHOD_NOT_ALLOWED,
            format!("Method {method} not allowed, POST required.\n"),
        );
    }
    match endpoint {
        Endpoint::Help => Reply::ok_text(help()),
        Endpoint::Ready => with_state(ctx, server_info::ready),
        Endpoint::ServerInfo => with_state(ctx, server_info::render),
        Endpoint::Stats => with_state(ctx, |s| stats::handle(s, &query)),
        Endpoint::StatsPrometheus => with_state(ctx, |s| stats::prometheus(s, &query)),
        Endpoint::ConfigDump => with_state(ctx, |s| config_dump::handle(s, &query)),
        Endpoint::Certs => with_state(ctx, certs::handle),
        Endpoint::Clusters => with_state(ctx, |s| clusters::handle(s, &query)),
        Endpoint::Listeners => with_state(ctx, |s| listeners::handle(s, &query)),
        Endpoint::Logging => logging::handle(ctx.logs.as_ref(), &query),
        Endpoint::HealthcheckFail | Endpoint::HealthcheckOk => {
            lock(ctx).healthcheck_failed = endpoint == Endpoint::HealthcheckFail;
            Reply::ok_text("OK\n".into())
        }
        Endpoint::DrainListeners => {
            let (started, carried_out) = tokio::sync::oneshot::channel();
            *done = Some(carried_out);
            command(
                ctx,
                AgentCommand::DrainListeners {
                    inbound_only: query.has("inboundonly"),
                    graceful: query.has("graceful"),
                    started: Some(started),
                },
            )
        }
        Endpoint::QuitQuitQuit => command(ctx, AgentCommand::Shutdown),
    }
}

fn lock(ctx: &AdminContext) -> std::sync::MutexGuard<'_, AgentState> {
    // A panic elsewhere while holding the lock leaves plain data behind; keep serving it.
    ctx.state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn with_state(ctx: &AdminContext, render: impl FnOnce(&AgentState) -> Reply) -> Reply {
    render(&lock(ctx))
}

fn command(ctx: &AdminContext, command: AgentCommand) -> Reply {
    match ctx.commands.send(command) {
        Ok(()) => Reply::ok_text("OK\n".into()),
        Err(_) => Reply::text(
            hyper::StatusCode::SERVICE_UNAVAILABLE,
            "agent loop is not running\n".into(),
        ),
    }
}

fn help() -> String {
    let mut out = String::from("admin commands are:\n");
    for (path, _, mutates, text) in ENDPOINTS {
        let method = if *mutates { " (POST)" } else { "" };
        out.push_str(&format!("  {path}{method}: {text}\n"));
    }
    out
}
