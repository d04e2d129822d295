//! `/listeners`: each listener's name and address, as `name::address` lines or as
//! `envoy.admin.v3.Listeners` JSON.
use envoy_types::pb::envoy::admin::v3::{ListenerStatus, Listeners};

use super::{clusters::socket_address, query::Query, reply::Reply};
use crate::agent::AgentState;

pub fn text(state: &AgentState) -> String {
    state
        .snapshot
        .listeners
        .iter()
        .map(|l| format!("{}::{}\n", l.name, l.address))
        .collect()
}

pub fn statuses(state: &AgentState) -> Listeners {
    Listeners {
        listener_statuses: state
            .snapshot
            .listeners
            .iter()
            .map(|l| ListenerStatus {
                name: l.name.clone(),
                local_address: Some(socket_address(l.address)),
                ..Default::default()
            })
            .collect(),
    }
}

/// `GET /listeners`.
pub fn handle(state: &AgentState, query: &Query) -> Reply {
    match query.get("format") {
        Some("json") => Reply::json(&proto::to_json(&statuses(state))),
        _ => Reply::ok_text(text(state)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::fixture;

    #[test]
    fn text_and_json() {
        let state = fixture::state();
        assert_eq!(text(&state), "ingress::0.0.0.0:10000\n");
        let json = proto::to_json(&statuses(&state));
        assert_eq!(json["listener_statuses"][0]["name"], "ingress");
        assert_eq!(
            json["listener_statuses"][0]["local_address"]["socket_address"]["port_value"],
            10000
        );
    }
}
