//! xDS transport: what one stream has subscribed, what the agent accepted, and which
//! responses still await a verdict; decides which request each event sends (pure, no I/O).

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use envoy_types::pb::{
    envoy::{
        config::core::v3::Node,
        service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest},
    },
    google::rpc::Status,
};
use tracing::debug;

use super::{delta, sotw};
use crate::xds::{Rejection, StreamSettings, Update};

/// `google.rpc.Code.INTERNAL`: the `error_detail.code` Envoy puts on a NACK.
const NACK_CODE: i32 = 13;

/// A request for the live stream, of the stream's kind.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Request {
    Sotw(DiscoveryRequest),
    Delta(DeltaDiscoveryRequest),
}

impl Request {
    pub(super) fn into_sotw(self) -> Option<DiscoveryRequest> {
        match self {
            Request::Sotw(request) => Some(request),
            Request::Delta(_) => None,
        }
    }

    pub(super) fn into_delta(self) -> Option<DeltaDiscoveryRequest> {
        match self {
            Request::Delta(request) => Some(request),
            Request::Sotw(_) => None,
        }
    }
}

/// The wildcard types (LDS and CDS), as Envoy subscribes to them.
fn is_wildcard(type_url: &str) -> bool {
    type_url == crate::dynamic::LISTENER || type_url == crate::dynamic::CLUSTER
}

/// A response handed to the agent and not answered yet.
#[derive(Debug)]
struct Pending {
    /// The stream it came on: an answer goes out only on that stream.
    stream: u64,
    nonce: String,
    version_info: String,
    /// Delta: (name, version) of each resource in it (state of the world: empty).
    resources: Vec<(String, String)>,
    removed: Vec<String>,
}

/// One type URL's subscription.
#[derive(Debug)]
pub(super) struct TypeState {
    pub(super) type_url: String,
    /// A wildcard subscription (LDS, CDS): every resource of the type.
    pub(super) wildcard: bool,
    /// The names the agent wants (a named type with none is not requested at all).
    pub(super) names: BTreeSet<String>,
    /// Delta: the subscription the server knows on the live stream (`*` for wildcard).
    pub(super) told_server: BTreeSet<String>,
    /// Delta: `names` changed since the server was last told (only then is a diff computed:
    /// an ACK of a 10,000-name type must not compare the whole set).
    pub(super) names_changed: bool,
    /// State of the world: the last accepted `version_info` ("" before any).
    pub(super) accepted_version: String,
    /// Delta: name → version of every accepted resource not removed since.
    pub(super) held: BTreeMap<String, String>,
    /// The nonce of the last response on the live stream ("" before any).
    pub(super) last_nonce: String,
    pending: VecDeque<Pending>,
}

impl TypeState {
    fn new(type_url: &str, names: BTreeSet<String>) -> TypeState {
        TypeState {
            type_url: type_url.to_owned(),
            wildcard: is_wildcard(type_url),
            names,
            told_server: BTreeSet::new(),
            names_changed: false,
            accepted_version: String::new(),
            held: BTreeMap::new(),
            last_nonce: String::new(),
            pending: VecDeque::new(),
        }
    }

    /// Replaces the names; false when they are the same. Delta no longer holds a resource
    /// that is no longer subscribed.
    fn set_names(&mut self, names: BTreeSet<String>) -> bool {
        if self.names == names {
            return false;
        }
        self.names = names;
        self.names_changed = true;
        if !self.wildcard {
            let names = &self.names;
            self.held.retain(|name, _| names.contains(name));
        }
        true
    }

    /// Records what the agent accepted of `pending`.
    fn settle(&mut self, pending: &Pending, rejection: Option<&Rejection>) {
        let Some(rejection) = rejection else {
            self.accepted_version.clone_from(&pending.version_info);
            self.hold(&pending.resources, &HashSet::new());
            self.release(&pending.removed);
            return;
        };
        // State of the world: a NACK keeps the previous version. Delta: what was not
        // rejected is held, at its own version.
        let rejected: HashSet<&str> = rejection.names.iter().map(String::as_str).collect();
        self.hold(&pending.resources, &rejected);
        self.release(&pending.removed);
    }

    fn hold(&mut self, resources: &[(String, String)], rejected: &HashSet<&str>) {
        for (name, version) in resources {
            if !rejected.contains(name.as_str()) && self.wants(name) {
                self.held.insert(name.clone(), version.clone());
            }
        }
    }

    fn release(&mut self, removed: &[String]) {
        for name in removed {
            self.held.remove(name);
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Whether the type is asked for at all (a named type with no names is not).
    pub(super) fn requested(&self) -> bool {
        self.wildcard || !self.names.is_empty()
    }
}

/// Every type subscribed on a stream, across reconnects.
#[derive(Debug)]
pub(super) struct Subscriptions {
    delta: bool,
    node: Node,
    node_on_first_only: bool,
    /// In the order first subscribed (the order of a new stream's first requests).
    types: Vec<TypeState>,
    /// The live stream's number.
    live: Option<u64>,
    streams: u64,
    node_sent: bool,
}

impl Subscriptions {
    pub(super) fn new(settings: &StreamSettings) -> Subscriptions {
        Subscriptions {
            delta: settings.delta,
            node: settings.node.clone(),
            node_on_first_only: settings.set_node_on_first_message_only,
            types: Vec::new(),
            live: None,
            streams: 0,
            node_sent: false,
        }
    }

    /// A new stream: the first request of every subscribed type.
    pub(super) fn start_stream(&mut self) -> Vec<Request> {
        self.streams += 1;
        self.live = Some(self.streams);
        self.node_sent = false;
        let requested: Vec<usize> = (0..self.types.len())
            .filter(|i| self.types[*i].requested())
            .collect();
        requested
            .into_iter()
            .map(|i| self.first_request(i))
            .collect()
    }

    pub(super) fn end_stream(&mut self) {
        self.live = None;
    }

    /// Sets the names of `type_url`; the request that tells the live stream, when one is
    /// due now. While a response of the type awaits its verdict the change waits: the
    /// answer carries it.
    pub(super) fn subscribe(&mut self, type_url: &str, names: Vec<String>) -> Option<Request> {
        let names: BTreeSet<String> = names.into_iter().collect();
        let Some(i) = self.types.iter().position(|t| t.type_url == type_url) else {
            let ty = TypeState::new(type_url, names);
            let requested = ty.requested();
            self.types.push(ty);
            return self
                .live
                .filter(|_| requested)
                .map(|_| self.first_request(self.types.len() - 1));
        };
        if !self.types[i].set_names(names) {
            return None;
        }
        let live = self.live?;
        if self.types[i].pending.iter().any(|p| p.stream == live) {
            return None;
        }
        // Not an answer: Delta sends no nonce; state of the world restates the last one, as
        // Envoy does, with the accepted version.
        let nonce = if self.delta {
            String::new()
        } else {
            self.types[i].last_nonce.clone()
        };
        Some(self.later_request(i, nonce, None))
    }

    /// Notes a response from the live stream; the update the agent must answer, or None for
    /// a type nobody subscribed (ignored, as Envoy does).
    pub(super) fn receive(&mut self, update: Update) -> Option<Update> {
        let stream = self.live?;
        let Some(ty) = self
            .types
            .iter_mut()
            .find(|t| t.type_url == update.type_url)
        else {
            debug!(type_url = %update.type_url, "xDS response for an unsubscribed type ignored");
            return None;
        };
        ty.last_nonce.clone_from(&update.nonce);
        ty.pending.push_back(Pending {
            stream,
            nonce: update.nonce.clone(),
            version_info: update.version_info.clone(),
            // Only Delta tracks resources one by one.
            resources: if self.delta {
                (update.resources.iter())
                    .map(|r| (r.name.clone(), r.version.clone()))
                    .collect()
            } else {
                Vec::new()
            },
            removed: if self.delta {
                update.removed.clone()
            } else {
                Vec::new()
            },
        });
        Some(update)
    }

    /// Records the agent's verdict on the response `nonce` of `type_url`; the ACK or NACK
    /// to send, when that response came on the live stream.
    pub(super) fn verdict(
        &mut self,
        type_url: &str,
        nonce: &str,
        rejection: Option<Rejection>,
    ) -> Option<Request> {
        let Some(i) = self.types.iter().position(|t| t.type_url == type_url) else {
            debug!(
                type_url,
                nonce, "xDS verdict for an unsubscribed type ignored"
            );
            return None;
        };
        let ty = &mut self.types[i];
        let Some(at) = ty.pending.iter().position(|p| p.nonce == nonce) else {
            debug!(
                type_url,
                nonce, "xDS verdict for an unknown response ignored"
            );
            return None;
        };
        let pending = ty.pending.remove(at)?;
        ty.settle(&pending, rejection.as_ref());
        if self.live != Some(pending.stream) {
            return None;
        }
        let error = rejection.map(|r| Status {
            code: NACK_CODE,
            message: r.message,
            details: Vec::new(),
        });
        Some(self.later_request(i, pending.nonce, error))
    }

    /// A request after the type's first on the stream.
    fn later_request(&mut self, i: usize, nonce: String, error: Option<Status>) -> Request {
        let node = self.node_for_request();
        let ty = &mut self.types[i];
        if self.delta {
            Request::Delta(delta::request(ty, node, nonce, error))
        } else {
            Request::Sotw(sotw::request(ty, node, nonce, error))
        }
    }

    fn first_request(&mut self, i: usize) -> Request {
        let node = self.node_for_request();
        let ty = &mut self.types[i];
        ty.last_nonce.clear();
        if self.delta {
            Request::Delta(delta::first_request(ty, node))
        } else {
            Request::Sotw(sotw::request(ty, node, String::new(), None))
        }
    }

    /// The node, on the stream's first request and, unless `set_node_on_first_message_only`,
    /// on every one.
    fn node_for_request(&mut self) -> Option<Node> {
        if self.node_on_first_only && self.node_sent {
            return None;
        }
        self.node_sent = true;
        Some(self.node.clone())
    }
}

#[cfg(test)]
#[path = "subscriptions_tests.rs"]
mod tests;
