//! `/certs`: the certificates of every TLS context in use (each listener chain's and each
//! cluster's, `transport_socket_matches` included), as Envoy lists them: the first trusted CA (`ca_cert`) and the first
//! certificate of each chain the context serves or presents (`cert_chain`), with serial
//! number, SANs and validity. A context still waiting for its SDS secrets is not listed.
use std::time::SystemTime;

use serde_json::{json, Value};

use super::{config_dump::timestamp, reply::Reply};
use crate::{
    agent::AgentState,
    model::tls::{CertificateInfo, CertificateSan, ContextCertificates},
};

/// `GET /certs`.
pub fn handle(state: &AgentState) -> Reply {
    let snapshot = &state.snapshot;
    let servers = snapshot
        .listeners
        .iter()
        .flat_map(|l| &l.filter_chains)
        .filter_map(|chain| Some(chain.tls.as_ref()?.configs()?.certificates.clone()));
    let clients = snapshot
        .clusters
        .values()
        .flat_map(|cluster| cluster.tls_contexts())
        .filter_map(|tls| Some(tls.configs()?.certificates.clone()));
    let now = SystemTime::now();
    let certificates: Vec<Value> = servers
        .chain(clients)
        .map(|context| render(&context, now))
        .collect();
    Reply::json(&json!({ "certificates": certificates }))
}

fn render(context: &ContextCertificates, now: SystemTime) -> Value {
    let details = |certs: &mut dyn Iterator<Item = &CertificateInfo>| -> Vec<Value> {
        certs.map(|cert| details(cert, now)).collect()
    };
    json!({
        "ca_cert": details(&mut context.ca.iter()),
        "cert_chain": details(&mut context.chain.iter()),
    })
}

/// One certificate as Envoy's `CertificateDetails` (whole days left, none once expired).
fn details(cert: &CertificateInfo, now: SystemTime) -> Value {
    let time = |t: SystemTime| proto::to_json(&timestamp(t));
    let days = cert
        .expiration
        .duration_since(now)
        .map_or(0, |left| left.as_secs() / 86_400);
    let sans: Vec<Value> = cert
        .subject_alt_names
        .iter()
        .map(|san| match san {
            CertificateSan::Dns(name) => json!({ "dns": name }),
            CertificateSan::Uri(name) => json!({ "uri": name }),
            CertificateSan::IpAddress(ip) => json!({ "ip_address": ip }),
        })
        .collect();
    json!({
        "path": cert.path,
        "serial_number": cert.serial_number,
        "subject_alt_names": sans,
        "days_until_expiration": days.to_string(),
        "valid_from": time(cert.valid_from),
        "expiration_time": time(cert.expiration),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn details_as_envoy_prints_them() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_591_008);
        let cert = CertificateInfo {
            path: "<inline>".into(),
            serial_number: "7321a1".into(),
            subject_alt_names: vec![
                CertificateSan::Dns("one.example.com".into()),
                CertificateSan::Uri("spiffe://x/one".into()),
            ],
            valid_from: start,
            expiration: start + Duration::from_secs(30 * 86_400),
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
