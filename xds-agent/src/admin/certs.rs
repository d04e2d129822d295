//! `/certs`: the certificates of every TLS context in use (each listener chain's and each
//! cluster's, `transport_socket_matches` included), as Envoy lists them: the first trusted CA (`ca_cert`) and the first
//! certificate of each chain the context serves or presents (`cert_chain`), with serial
//! number, SANs and validity. A context still waiting for its SDS secrets is not listed.
use std::time::SystemTime;

use serde_json::{json, Value};

use super::{config_dump::timestamp, reply::Reply};
use crate::agent::AgentState;
use model::tls::{ContextCertificates, ListedCertificate};

/// `GET /certs`.
pub fn handle(state: &AgentState) -> Reply {
    let snapshot = &state.snapshot;
    let servers = snapshot
        .listeners
        .iter()
        .flat_map(|l| &l.filter_chains)
        .filter_map(|chain| Some(chain.tls.as_ref()?.configs()?.listed.clone()));
    let clients = snapshot
        .clusters
        .values()
        .flat_map(|cluster| cluster.tls_contexts())
        .filter_map(|tls| Some(tls.configs()?.listed.clone()));
    let now = SystemTime::now();
    let certificates: Vec<Value> = servers
        .chain(clients)
        .map(|context| render(&context, now))
        .collect();
    Reply::json(&json!({ "certificates": certificates }))
}

fn render(context: &ContextCertificates, now: SystemTime) -> Value {
    let details = |certs: &mut dyn Iterator<Item = &ListedCertificate>| -> Vec<Value> {
        certs.map(|cert| details(cert, now)).collect()
    };
    json!({
        "ca_cert": details(&mut context.ca.iter()),
        "cert_chain": details(&mut context.chain.iter()),
    })
}

/// One certificate as Envoy's `CertificateDetails` (whole days left, none once expired);
/// its SANs DNS names first, then URIs, then IP addresses.
fn details(cert: &ListedCertificate, now: SystemTime) -> Value {
    let info = &cert.info;
    let time = |t: SystemTime| proto::to_json(&timestamp(t));
    let days = info
        .not_after
        .duration_since(now)
        .map_or(0, |left| left.as_secs() / 86_400);
    let sans = &info.sans;
    let named = |kind: &str, names: &[String]| -> Vec<Value> {
        names.iter().map(|name| json!({ kind: name })).collect()
    };
    let mut listed = named("dns", &sans.dns);
    listed.extend(named("uri", &sans.uri));
    listed.extend(named("ip_address", &sans.ip));
    json!({
        "path": cert.path,
        "serial_number": info.serial,
        "subject_alt_names": listed,
        "days_until_expiration": days.to_string(),
        "valid_from": time(info.not_before),
        "expiration_time": time(info.not_after),
    })
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use model::tls::PeerNames;
    use model::tls_info::CertificateInfo;

    #[test]
    fn details_as_envoy_prints_them() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_591_008);
        let cert = ListedCertificate {
            path: "<inline>".into(),
            info: Arc::new(CertificateInfo {
                subject: "CN=one".into(),
                issuer: "CN=one".into(),
                serial: "7321a1".into(),
                not_before: start,
                not_after: start + Duration::from_secs(30 * 86_400),
                sans: PeerNames {
                    dns: vec!["one.example.com".into()],
                    uri: vec!["spiffe://x/one".into()],
                    ..Default::default()
                },
                sha256: String::new(),
            }),
        };
        let now = start + Duration::from_secs(60);
        assert_eq!(
            details(&cert, now),
            json!({
                "path": "<inline>",
                "serial_number": "7321a1",
                "subject_alt_names": [{"dns": "one.example.com"}, {"uri": "spiffe://x/one"}],
                "days_until_expiration": "29",
                "valid_from": "2026-12-06T21:03:28Z",
                "expiration_time": "2027-01-05T21:03:28Z",
            })
        );
        let expired = details(&cert, start + Duration::from_secs(31 * 86_400));
        assert_eq!(expired["days_until_expiration"], "0");
    }
}
