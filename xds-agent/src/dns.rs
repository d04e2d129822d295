//! DNS for STRICT_DNS / LOGICAL_DNS clusters, resolved on the agent (never on a shard) and
//! refreshed every `dns_refresh_rate`.
use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc::UnboundedSender;

use model::{balancing::FirstPublished, DnsTarget, Endpoint};

/// How long one lookup may take before the cluster keeps its previous addresses.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves every host of `target` (failures are logged and contribute no addresses).
pub async fn resolve(target: &DnsTarget) -> Arc<[Endpoint]> {
    let mut endpoints = Vec::new();
    for host in &target.hosts {
        let hostname: Arc<str> = Arc::from(host.hostname.as_str());
        let lookup = tokio::net::lookup_host((host.hostname.as_str(), host.port));
        match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(addresses)) => {
                for address in addresses {
                    endpoints.push(Endpoint {
                        address,
                        hostname: Some(hostname.clone()),
                        first_published: FirstPublished::now(),
                        ..host.template.clone()
                    });
                    if target.logical {
                        return endpoints.into();
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(host = %host.hostname, "DNS lookup failed: {e}"),
            Err(_) => {
                tracing::warn!(host = %host.hostname, "DNS lookup timed out after {LOOKUP_TIMEOUT:?}")
            }
        }
    }
    endpoints.into()
}

/// Re-resolves `cluster` forever, sending every result; the agent publishes only changes.
pub async fn refresh(
    cluster: String,
    target: DnsTarget,
    results: UnboundedSender<(String, Arc<[Endpoint]>)>,
) {
    loop {
        tokio::time::sleep(target.refresh_rate).await;
        let endpoints = resolve(&target).await;
        if endpoints.is_empty() {
            continue; // keep the last known addresses, as Envoy does on resolution failure
        }
        if results.send((cluster.clone(), endpoints)).is_err() {
            return;
        }
    }
}
