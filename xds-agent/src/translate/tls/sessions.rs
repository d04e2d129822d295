//! Translator (TLS): session caches made on a context's first stored session. rustls's memory
//! caches size their tables when created (~14 KB for an upstream context's 256 server names,
//! ~500 KB for a downstream context's 4,096 sessions), and most contexts of a sidecar (one per
//! cluster and per TLS filter chain) never resume a session.
use std::sync::{Arc, OnceLock};

use rustls::{
    client::{
        ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue,
        Tls13ClientSessionValue,
    },
    pki_types::ServerName,
    server::{ServerSessionMemoryCache, StoresServerSessions},
    NamedGroup,
};

/// An upstream context's sessions: a [`ClientSessionMemoryCache`] of `size` server names,
/// made when the first one is stored.
#[derive(Debug)]
pub struct ClientSessions {
    size: usize,
    cache: OnceLock<ClientSessionMemoryCache>,
}

impl ClientSessions {
    pub fn new(size: usize) -> Arc<Self> {
        Arc::new(Self {
            size,
            cache: OnceLock::new(),
        })
    }

    fn made(&self) -> &ClientSessionMemoryCache {
        self.cache
            .get_or_init(|| ClientSessionMemoryCache::new(self.size))
    }
}

impl ClientSessionStore for ClientSessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.made().set_kx_hint(server_name, group)
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.cache.get()?.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.made().set_tls12_session(server_name, value)
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.cache.get()?.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        if let Some(cache) = self.cache.get() {
            cache.remove_tls12_session(server_name)
        }
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.made().insert_tls13_ticket(server_name, value)
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.cache.get()?.take_tls13_ticket(server_name)
    }
}

/// A downstream context's sessions for stateful resumption: a [`ServerSessionMemoryCache`] of
/// `size` sessions, made when the first one is stored.
#[derive(Debug)]
pub struct ServerSessions {
    size: usize,
    cache: OnceLock<Arc<ServerSessionMemoryCache>>,
}

impl ServerSessions {
    pub fn new(size: usize) -> Arc<Self> {
        Arc::new(Self {
            size,
            cache: OnceLock::new(),
        })
    }
}

impl StoresServerSessions for ServerSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.cache
            .get_or_init(|| ServerSessionMemoryCache::new(self.size))
            .put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache.get()?.get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache.get()?.take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_sessions_are_kept_once_one_is_stored() {
        let sessions = ServerSessions::new(2);
        assert_eq!(sessions.get(b"a"), None);
        assert!(sessions.cache.get().is_none(), "a lookup makes no cache");
        assert!(sessions.put(b"a".to_vec(), b"1".to_vec()));
        assert_eq!(sessions.get(b"a").as_deref(), Some(&b"1"[..]));
        assert_eq!(sessions.take(b"a").as_deref(), Some(&b"1"[..]));
        assert_eq!(sessions.get(b"a"), None);
    }

    #[test]
    fn client_sessions_are_kept_once_one_is_stored() {
        let sessions = ClientSessions::new(4);
        let name = ServerName::try_from("a.example").unwrap();
        assert_eq!(sessions.kx_hint(&name), None);
        sessions.remove_tls12_session(&name);
        assert!(sessions.cache.get().is_none(), "lookups make no cache");
        sessions.set_kx_hint(name.clone(), NamedGroup::X25519);
        assert_eq!(sessions.kx_hint(&name), Some(NamedGroup::X25519));
    }
}
