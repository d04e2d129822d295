//! How an upstream connection is opened beyond its cluster's settings: the SNI (`auto_sni`)
//! and the ALPN list (Istio's `istio.alpn`) in place of the configured ones. A pooled
//! connection serves only requests that would have opened it the same way.
use model::filters::Alpn;

#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAs<'a> {
    pub sni: Option<&'a str>,
    pub alpn: Option<&'a Alpn>,
}

/// What a connection was opened with, kept with it.
#[derive(Debug, Default)]
pub struct OpenedAs {
    sni: Option<Box<str>>,
    alpn: Option<Alpn>,
}

impl OpenAs<'_> {
    pub fn kept(self) -> OpenedAs {
        OpenedAs {
            sni: self.sni.map(Box::from),
            alpn: self.alpn.cloned(),
        }
    }
}

impl OpenedAs {
    /// Whether a connection opened this way serves a request that wants `wanted`.
    pub fn serves(&self, wanted: OpenAs<'_>) -> bool {
        self.sni.as_deref() == wanted.sni && self.alpn.as_deref() == wanted.alpn.map(|a| &**a)
    }
}
