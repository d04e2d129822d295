//! Istio's `istio_authn` network filter: after a TLS handshake in which the peer presented a
//! certificate, the first `spiffe://` URI SAN of the peer's and of this proxy's certificate
//! become the filter state `io.istio.peer_principal` and `io.istio.local_principal`.
use model::tls_info::CertificateInfo;

use super::filter_state::FilterState;
use crate::net::transport::Transport;

const SPIFFE: &str = "spiffe://";

pub fn run(transport: &Transport, state: &mut FilterState) {
    let Some(tls) = transport.tls() else {
        return;
    };
    let info = tls.info();
    let Some(peer) = info.peer() else {
        return;
    };
    state.peer_principal = spiffe_id(peer);
    state.local_principal = info.local.as_deref().and_then(spiffe_id);
}

fn spiffe_id(cert: &CertificateInfo) -> Option<Box<str>> {
    cert.sans
        .uri
        .iter()
        .find(|san| san.starts_with(SPIFFE))
        .map(|san| san.as_str().into())
}
