//! External authorization: what the HTTP and network `ext_authz` filters share — the
//! connection's part of a check request (`attributes`), the call to the authorization service
//! through the shard's own upstream pools (`call`) over gRPC (`client`) or, for the HTTP
//! filter, plain HTTP (`http_client`), and what the service decided (`verdict`).
pub mod attributes;
mod call;
pub mod client;
pub mod http_client;
pub mod verdict;
