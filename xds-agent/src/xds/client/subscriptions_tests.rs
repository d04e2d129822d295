//! Tests: request building for state of the world and Delta — ACK/NACK fields, node
//! placement, subscription diffs, initial resource versions across accepts, rejections,
//! removals and reconnects.

use std::{collections::HashMap, time::Duration};

use envoy_types::pb::{
    envoy::{config::core::v3::Node, service::discovery::v3::DiscoveryRequest},
    google::protobuf::Any,
};

use super::*;
use crate::{
    dynamic::{ASSIGNMENT as EDS, CLUSTER as CDS},
    xds::{GrpcTarget, Resource, Service},
};

fn settings(delta: bool, node_on_first_only: bool) -> StreamSettings {
    StreamSettings {
        service: Service::Aggregated,
        target: GrpcTarget::Tcp(([127, 0, 0, 1], 1).into()),
        delta,
        node: Node {
            id: "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local".into(),
            ..Default::default()
        },
        set_node_on_first_message_only: node_on_first_only,
        connect_timeout: Duration::from_secs(1),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| n.to_string()).collect()
}

fn update(type_url: &str, version: &str, nonce: &str, resources: &[(&str, &str)]) -> Update {
    Update {
        type_url: type_url.into(),
        version_info: version.into(),
        nonce: nonce.into(),
        resources: (resources.iter())
            .map(|(name, version)| Resource {
                name: name.to_string(),
                version: version.to_string(),
                body: Any::default(),
            })
            .collect(),
        removed: Vec::new(),
        full_state: false,
    }
}

fn removal(type_url: &str, nonce: &str, removed: &[&str]) -> Update {
    Update {
        removed: names(removed),
        ..update(type_url, "", nonce, &[])
    }
}

fn rejection(message: &str, rejected: &[&str]) -> Option<Rejection> {
    Some(Rejection {
        message: message.into(),
        names: names(rejected),
    })
}

fn sotw(request: Option<Request>) -> DiscoveryRequest {
    request
        .and_then(Request::into_sotw)
        .expect("a SotW request")
}

fn delta(request: Option<Request>) -> DeltaDiscoveryRequest {
    request
        .and_then(Request::into_delta)
        .expect("a Delta request")
}

fn initial_versions(request: &DeltaDiscoveryRequest) -> HashMap<&str, &str> {
    (request.initial_resource_versions.iter())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn sotw_first_request_names_the_type_and_carries_no_version_or_nonce() {
    let mut subs = Subscriptions::new(&settings(false, false));
    assert_eq!(
        subs.subscribe(EDS, names(&["b", "a"])),
        None,
        "no stream yet"
    );
    let first = subs.start_stream();
    assert_eq!(first.len(), 1);
    let request = sotw(first.into_iter().next());
    assert_eq!(request.type_url, EDS);
    assert_eq!(request.resource_names, ["a", "b"]);
    assert_eq!(request.version_info, "");
    assert_eq!(request.response_nonce, "");
    assert!(request.node.is_some());
    assert!(request.error_detail.is_none());
}

#[test]
fn sotw_ack_carries_the_response_version_and_nack_the_previous_one() {
    let mut subs = Subscriptions::new(&settings(false, false));
    subs.subscribe(CDS, vec![]);
    subs.start_stream();
    subs.receive(update(CDS, "v1", "n1", &[("c1", "v1")]));
    let ack = sotw(subs.verdict(CDS, "n1", None));
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("v1", "n1")
    );
    assert!(ack.error_detail.is_none());
    assert!(ack.resource_names.is_empty(), "wildcard");

    subs.receive(update(CDS, "v2", "n2", &[("c1", "v2")]));
    let nack = sotw(subs.verdict(CDS, "n2", rejection("cluster c1: bad lb_policy", &["c1"])));
    assert_eq!(
        (nack.version_info.as_str(), nack.response_nonce.as_str()),
        ("v1", "n2")
    );
    let status = nack.error_detail.expect("error_detail on a NACK");
    assert_eq!(status.code, 13, "INTERNAL, as Envoy");
    assert_eq!(status.message, "cluster c1: bad lb_policy");

    // A new stream restates the last accepted version.
    subs.end_stream();
    let again = sotw(subs.start_stream().into_iter().next());
    assert_eq!(
        (again.version_info.as_str(), again.response_nonce.as_str()),
        ("v1", "")
    );
}

#[test]
fn node_goes_on_every_request_or_only_the_streams_first() {
    for first_only in [false, true] {
        let mut subs = Subscriptions::new(&settings(false, first_only));
        subs.subscribe(CDS, vec![]);
        subs.subscribe(EDS, names(&["a"]));
        let first = subs.start_stream();
        let nodes: Vec<bool> = (first.into_iter())
            .map(|r| sotw(Some(r)).node.is_some())
            .collect();
        assert_eq!(nodes, [true, !first_only]);
        subs.receive(update(CDS, "1", "n1", &[]));
        assert_eq!(
            sotw(subs.verdict(CDS, "n1", None)).node.is_some(),
            !first_only
        );
        subs.end_stream();
        let again = sotw(subs.start_stream().into_iter().next());
        assert!(
            again.node.is_some(),
            "a new stream's first request has the node"
        );
    }
}

#[test]
fn sotw_subscription_change_sends_the_full_list_with_the_last_nonce() {
    let mut subs = Subscriptions::new(&settings(false, false));
    subs.subscribe(EDS, names(&["a"]));
    subs.start_stream();
    subs.receive(update(EDS, "1", "n1", &[("a", "1")]));
    subs.verdict(CDS, "n1", None);
    subs.verdict(EDS, "n1", None);
    assert_eq!(subs.subscribe(EDS, names(&["a"])), None, "unchanged");
    let request = sotw(subs.subscribe(EDS, names(&["a", "b"])));
    assert_eq!(request.resource_names, ["a", "b"]);
    assert_eq!(
        (
            request.version_info.as_str(),
            request.response_nonce.as_str()
        ),
        ("1", "n1")
    );
}

#[test]
fn a_change_while_a_response_awaits_its_verdict_rides_on_the_answer() {
    let mut subs = Subscriptions::new(&settings(false, false));
    subs.subscribe(EDS, names(&["a"]));
    subs.start_stream();
    subs.receive(update(EDS, "1", "n1", &[("a", "1")]));
    assert_eq!(subs.subscribe(EDS, names(&["a", "b"])), None);
    let ack = sotw(subs.verdict(EDS, "n1", None));
    assert_eq!(ack.resource_names, ["a", "b"]);
    assert_eq!(ack.response_nonce, "n1");

    let mut subs = Subscriptions::new(&settings(true, false));
    subs.subscribe(EDS, names(&["a"]));
    subs.start_stream();
    subs.receive(update(EDS, "", "n1", &[("a", "h1")]));
    assert_eq!(subs.subscribe(EDS, names(&["b"])), None);
    let ack = delta(subs.verdict(EDS, "n1", None));
    assert_eq!(ack.resource_names_subscribe, ["b"]);
    assert_eq!(ack.resource_names_unsubscribe, ["a"]);
    assert_eq!(ack.response_nonce, "n1");
}

#[test]
fn a_new_type_on_a_live_stream_sends_its_first_request() {
    let mut subs = Subscriptions::new(&settings(true, false));
    subs.subscribe(CDS, vec![]);
    subs.start_stream();
    let request = delta(subs.subscribe(EDS, names(&["a"])));
    assert_eq!(request.type_url, EDS);
    assert_eq!(request.resource_names_subscribe, ["a"]);
    assert_eq!(request.response_nonce, "");
}

#[test]
fn delta_first_request_is_a_legacy_wildcard_or_the_names() {
    let mut subs = Subscriptions::new(&settings(true, false));
    subs.subscribe(CDS, vec![]);
    subs.subscribe(EDS, names(&["a"]));
    let first: Vec<_> = (subs.start_stream().into_iter())
        .map(|r| delta(Some(r)))
        .collect();
    assert!(first[0].resource_names_subscribe.is_empty());
    assert_eq!(first[1].resource_names_subscribe, ["a"]);
    assert!(first.iter().all(|r| r.initial_resource_versions.is_empty()));
    assert!(first.iter().all(|r| r.node.is_some()));
}

#[test]
fn delta_ack_and_nack_answer_by_nonce() {
    let mut subs = Subscriptions::new(&settings(true, false));
    subs.subscribe(CDS, vec![]);
    subs.start_stream();
    subs.receive(update(CDS, "7", "n1", &[("c1", "h1")]));
    let ack = delta(subs.verdict(CDS, "n1", None));
    assert_eq!(ack.response_nonce, "n1");
    assert!(ack.error_detail.is_none());
    assert!(ack.resource_names_subscribe.is_empty() && ack.resource_names_unsubscribe.is_empty());

    subs.receive(update(CDS, "8", "n2", &[("c2", "h2")]));
    let nack = delta(subs.verdict(CDS, "n2", rejection("c2: no endpoints", &["c2"])));
    assert_eq!(nack.response_nonce, "n2");
    let status = nack.error_detail.expect("error_detail");
    assert_eq!(
        (status.code, status.message.as_str()),
        (13, "c2: no endpoints")
    );
}

#[test]
fn delta_reconnect_reports_what_is_held_after_accepts_rejections_and_removals() {
    let mut subs = Subscriptions::new(&settings(true, false));
    subs.subscribe(CDS, vec![]);
    subs.start_stream();
    subs.receive(update(
        CDS,
        "1",
        "n1",
        &[("a", "a1"), ("b", "b1"), ("c", "c1")],
    ));
    subs.verdict(CDS, "n1", None);
    // b's new version is rejected: b stays at b1; d is rejected outright.
    subs.receive(update(
        CDS,
        "2",
        "n2",
        &[("b", "b2"), ("d", "d1"), ("e", "e1")],
    ));
    subs.verdict(CDS, "n2", rejection("bad", &["b", "d"]));
    subs.receive(removal(CDS, "n3", &["c"]));
    subs.verdict(CDS, "n3", None);
    // Not answered yet when the stream drops: not held.
    subs.receive(update(CDS, "4", "n4", &[("f", "f1")]));
    subs.end_stream();

    let first = delta(subs.start_stream().into_iter().next());
    assert_eq!(
        initial_versions(&first),
        HashMap::from([("a", "a1"), ("b", "b1"), ("e", "e1")])
    );
    assert!(
        first.resource_names_subscribe.is_empty(),
        "still a wildcard"
    );
    assert_eq!(first.response_nonce, "");

    // The late verdict for the dead stream is recorded but not sent.
    assert_eq!(subs.verdict(CDS, "n4", None), None);
    subs.end_stream();
    let next = delta(subs.start_stream().into_iter().next());
    assert_eq!(initial_versions(&next).get("f"), Some(&"f1"));
}

#[test]
fn delta_subscription_diffs_and_unsubscribed_names_are_no_longer_held() {
    let mut subs = Subscriptions::new(&settings(true, false));
    subs.subscribe(EDS, names(&["a", "b"]));
    subs.start_stream();
    subs.receive(update(EDS, "", "n1", &[("a", "a1"), ("b", "b1")]));
    subs.verdict(EDS, "n1", None);

    let change = delta(subs.subscribe(EDS, names(&["b", "c"])));
    assert_eq!(change.resource_names_subscribe, ["c"]);
    assert_eq!(change.resource_names_unsubscribe, ["a"]);
    assert_eq!(change.response_nonce, "", "not an ACK");

    // A named type with no names left unsubscribes everything (it is not a wildcard).
    let to_none = delta(subs.subscribe(EDS, vec![]));
    assert!(to_none.resource_names_subscribe.is_empty());
    assert_eq!(to_none.resource_names_unsubscribe, ["b", "c"]);
    subs.end_stream();
    assert!(
        subs.start_stream().is_empty(),
        "a named type with no names is not requested"
    );
    let again = delta(subs.subscribe(EDS, names(&["b"])));
    assert_eq!(again.resource_names_subscribe, ["b"]);
    assert!(again.resource_names_unsubscribe.is_empty());
}

#[test]
fn delta_reconnect_subscribes_the_names_with_what_is_held() {
    let mut subs = Subscriptions::new(&settings(true, false));
    subs.subscribe(EDS, names(&["a", "b"]));
    subs.start_stream();
    subs.receive(update(EDS, "", "n1", &[("a", "a1"), ("b", "b1")]));
    subs.verdict(EDS, "n1", None);
    subs.subscribe(EDS, names(&["b"]));
    subs.end_stream();
    let first = delta(subs.start_stream().into_iter().next());
    assert_eq!(initial_versions(&first), HashMap::from([("b", "b1")]));
    assert_eq!(first.resource_names_subscribe, ["b"]);
}

#[test]
fn responses_for_unsubscribed_types_and_unknown_nonces_are_ignored() {
    let mut subs = Subscriptions::new(&settings(false, false));
    subs.subscribe(CDS, vec![]);
    subs.start_stream();
    assert!(subs.receive(update(EDS, "1", "n1", &[])).is_none());
    assert_eq!(subs.verdict(EDS, "n1", None), None);
    assert_eq!(subs.verdict(CDS, "nope", None), None);
    assert!(subs.receive(update(CDS, "1", "n1", &[])).is_some());
    assert!(subs.verdict(CDS, "n1", None).is_some());
    assert_eq!(subs.verdict(CDS, "n1", None), None, "answered once");
}
