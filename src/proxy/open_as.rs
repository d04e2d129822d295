//! How an upstream connection is opened beyond its cluster's settings: the SNI (`auto_sni`)
//! and the ALPN list (Istio's `istio.alpn`) in place of the configured ones, and the filter
//! state a connection to an internal listener carries. A pooled connection serves only
//! requests that would have opened it the same way (connections that carry filter state are
//! never pooled: tcp_proxy and terminated CONNECTs open them).
use model::filters::Alpn;

use crate::filters::network::filter_state::SharedState;

#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAs<'a> {
    pub sni: Option<&'a str>,
    pub alpn: Option<&'a Alpn>,
    /// What the opener shares with the connection (read by internal listeners only).
    pub shared: Option<&'a SharedState>,
}

/// What a connection was opened with, kept with it (boxed: most connections have neither,
/// and every pooled connection carries this).
#[derive(Debug, Default)]
pub struct OpenedAs(Option<Box<Kept>>);

/// The SNI and the ALPN list a connection was opened with.
type Kept = (Option<Box<str>>, Option<Alpn>);

impl OpenAs<'_> {
    pub fn kept(self) -> OpenedAs {
        if self.sni.is_none() && self.alpn.is_none() {
            return OpenedAs(None);
        }
        OpenedAs(Some(Box::new((
            self.sni.map(Box::from),
            self.alpn.cloned(),
        ))))
    }
}

impl OpenedAs {
    /// Whether a connection opened this way serves a request that wants `wanted`.
    pub fn serves(&self, wanted: OpenAs<'_>) -> bool {
        match &self.0 {
            None => wanted.sni.is_none() && wanted.alpn.is_none(),
            Some(kept) => {
                kept.0.as_deref() == wanted.sni && kept.1.as_deref() == wanted.alpn.map(|a| &**a)
            }
        }
    }
}
