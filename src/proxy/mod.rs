//! Proxy layer: the shard-local cluster manager, load balancers, upstream connects.
pub mod cluster_manager;
pub mod connect;
pub mod lb;
pub mod pool;
pub mod router;
