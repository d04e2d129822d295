//! External authorization: what the HTTP and network `ext_authz` filters share — the
//! connection's part of a check request (`attributes`) and the `Authorization/Check` call
//! through the shard's own upstream pools, with its verdict (`client`).
pub mod attributes;
pub mod client;
