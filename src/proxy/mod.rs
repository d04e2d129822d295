//! Proxy layer: the shard-local cluster manager, load balancers, outlier counts, upstream
//! connects, the router and its request mirroring, upstream streams, tcp_proxy tunnels through
//! HTTP.
pub mod cluster_manager;
pub mod connect;
pub mod lb;
pub mod mirror;
pub mod open_as;
pub mod outlier;
pub mod pool;
pub mod request_hash;
pub mod router;
pub mod tunnel;
pub mod upstream;
