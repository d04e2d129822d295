//! `/ready` and `/server_info`: the server state as Envoy reports it, and who we are.
use std::time::Duration;

use envoy_types::pb::{
    envoy::admin::v3::{command_line_options, server_info::State, CommandLineOptions, ServerInfo},
    google::protobuf::Duration as ProtoDuration,
};
use hyper::StatusCode;

use super::reply::Reply;
use crate::agent::AgentState;
use model::stats::ServerState;

/// The state admin reports: a live server that failed its health check reports DRAINING,
/// as Envoy does after `/healthcheck/fail`.
pub fn state(agent: &AgentState) -> State {
    match agent.server_state {
        ServerState::Live if agent.healthcheck_failed => State::Draining,
        ServerState::Live => State::Live,
        ServerState::Draining => State::Draining,
        ServerState::PreInitializing => State::PreInitializing,
        ServerState::Initializing => State::Initializing,
    }
}

/// `GET /ready`: 200 `LIVE` when live, else 503 and the state's name.
pub fn ready(agent: &AgentState) -> Reply {
    let state = state(agent);
    let status = if state == State::Live {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Reply::text(status, format!("{}\n", state.as_str_name()))
}

/// Envoy's five-slot version shape (`<build>/<version>/<status>/<mode>/<TLS library>`), so
/// tools that split it on `/` find the version in the second slot.
fn version() -> String {
    let mode = if cfg!(debug_assertions) {
        "DEBUG"
    } else {
        "RELEASE"
    };
    format!(
        "shardproxy/{}/Distribution/{mode}/rustls",
        env!("CARGO_PKG_VERSION")
    )
}

fn proto_duration(d: Duration) -> ProtoDuration {
    ProtoDuration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// `envoy.admin.v3.ServerInfo` for the current state.
pub fn server_info(agent: &AgentState) -> ServerInfo {
    let options = &agent.options;
    let uptime = proto_duration(Duration::from_secs(agent.started.elapsed().as_secs()));
    let mut node = agent.bootstrap.node.clone().unwrap_or_default();
    // `--service-node` / `--service-cluster` override the bootstrap, as in Envoy.
    if let Some(id) = &options.service_node {
        node.id = id.clone();
    }
    if let Some(cluster) = &options.service_cluster {
        node.cluster = cluster.clone();
    }
    ServerInfo {
        version: version(),
        state: state(agent) as i32,
        uptime_current_epoch: Some(uptime),
        // No hot restart: this process is the only epoch.
        uptime_all_epochs: Some(uptime),
        hot_restart_version: "disabled".into(),
        command_line_options: Some(CommandLineOptions {
            concurrency: options.concurrency as u32,
            config_path: options
                .config_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            config_yaml: options.config_yaml.clone().unwrap_or_default(),
            allow_unknown_static_fields: options.allow_unknown_fields,
            service_node: options.service_node.clone().unwrap_or_default(),
            service_cluster: options.service_cluster.clone().unwrap_or_default(),
            drain_time: Some(proto_duration(options.drain_time)),
            drain_strategy: command_line_options::DrainStrategy::Gradual as i32,
            mode: command_line_options::Mode::Serve as i32,
            disable_hot_restart: true,
            ..Default::default()
        }),
        node: Some(node),
        hot_restart_initializing: false,
    }
}

/// `GET /server_info`.
pub fn render(agent: &AgentState) -> Reply {
    let mut json = proto::to_json(&server_info(agent));
    // Envoy always prints the state, LIVE (the enum's zero value) included.
    json["state"] = state(agent).as_str_name().into();
    Reply::json(&json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::fixture;

    #[test]
    fn ready_follows_state_and_healthcheck() {
        let mut agent = fixture::state();
        let reply = ready(&agent);
        assert_eq!(
            (reply.status, &reply.body[..]),
            (StatusCode::OK, &b"LIVE\n"[..])
        );
        agent.healthcheck_failed = true;
        let reply = ready(&agent);
        assert_eq!(
            (reply.status, &reply.body[..]),
            (StatusCode::SERVICE_UNAVAILABLE, &b"DRAINING\n"[..])
        );
        agent.healthcheck_failed = false;
        agent.server_state = ServerState::PreInitializing;
        assert_eq!(&ready(&agent).body[..], b"PRE_INITIALIZING\n");
    }

    #[test]
    fn server_info_json() {
        let json: serde_json::Value =
            serde_json::from_slice(&render(&fixture::state()).body).unwrap();
        assert!(json["version"]
            .as_str()
            .unwrap()
            .starts_with("shardproxy/0.1.0/"));
        assert_eq!(json["state"], "LIVE");
        assert_eq!(json["hot_restart_version"], "disabled");
        assert_eq!(json["uptime_current_epoch"], "0s");
        let options = &json["command_line_options"];
        assert_eq!(options["concurrency"], 2);
        assert_eq!(options["drain_time"], "45s");
        assert_eq!(options["config_path"], "/etc/shardproxy/bootstrap.yaml");
        assert_eq!(options["disable_hot_restart"], true);
        // --service-node overrides the bootstrap's node id; the cluster stays.
        assert_eq!(
            json["node"]["id"],
            "sidecar~10.0.0.9~pod.ns~ns.svc.cluster.local"
        );
        assert_eq!(json["node"]["cluster"], "mesh");
    }
}
