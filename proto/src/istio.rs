//! Istio's filter configs as Rust types, generated from `protos/istio/` (shardproxy's own
//! definitions of the messages istiod sends).
pub mod alpn {
    include!(concat!(
        env!("OUT_DIR"),
        "/istio.envoy.config.filter.http.alpn.v2alpha1.rs"
    ));
}

pub mod authentication {
    include!(concat!(
        env!("OUT_DIR"),
        "/istio.authentication.v1alpha1.rs"
    ));
}

pub mod connect_authority {
    include!(concat!(
        env!("OUT_DIR"),
        "/io.istio.http.connect_authority.rs"
    ));
}

pub mod connect_baggage {
    include!(concat!(
        env!("OUT_DIR"),
        "/io.istio.http.connect_baggage.rs"
    ));
}

pub mod http_authn {
    include!(concat!(
        env!("OUT_DIR"),
        "/istio.envoy.config.filter.http.authn.v2alpha1.rs"
    ));
}

pub mod metadata_exchange {
    include!(concat!(
        env!("OUT_DIR"),
        "/envoy.tcp.metadataexchange.config.rs"
    ));
}

pub mod network_authn {
    include!(concat!(env!("OUT_DIR"), "/io.istio.network.authn.rs"));
}

pub mod peer_metadata {
    include!(concat!(env!("OUT_DIR"), "/io.istio.http.peer_metadata.rs"));
}

pub mod set_internal_dst_address {
    include!(concat!(
        env!("OUT_DIR"),
        "/istio.set_internal_dst_address.v1.rs"
    ));
}

pub mod stats {
    include!(concat!(env!("OUT_DIR"), "/stats.rs"));
}
