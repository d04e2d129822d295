//! xDS transport: the gRPC channel to the control plane (HTTP/2 plaintext over TCP or a unix
//! socket) and the bidirectional ADS/SDS stream on it.

use std::{error::Error as _, fmt, path::PathBuf, sync::Arc};

use envoy_types::pb::envoy::service::{
    discovery::v3::{
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient as AdsClient,
        DeltaDiscoveryResponse, DiscoveryResponse,
    },
    secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient as SdsClient,
};
use hyper_util::rt::TokioIo;
use tokio::{net::UnixStream, sync::mpsc::UnboundedReceiver};
use tokio_stream::{wrappers::UnboundedReceiverStream, StreamExt};
use tonic::{
    codec::Streaming,
    transport::{Channel, Endpoint, Uri},
};

use super::{delta, sotw, subscriptions::Request};
use crate::xds::{GrpcTarget, Service, StreamSettings, Update};

/// The largest response accepted: Istio's config for a big mesh runs to tens of MiB, far
/// past tonic's 4 MiB default.
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Why a stream attempt ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum TransportError {
    #[error("cannot connect to the control plane at {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("the control plane failed the stream: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("the control plane closed the stream")]
    Closed,
}

/// Connects to the target within the settings' connect timeout.
pub(super) async fn connect(settings: &StreamSettings) -> Result<Channel, TransportError> {
    let failed = |e: tonic::transport::Error| TransportError::Connect {
        target: Target(&settings.target).to_string(),
        reason: chain(&e),
    };
    match &settings.target {
        GrpcTarget::Tcp(addr) => Endpoint::from_shared(format!("http://{addr}"))
            .map_err(failed)?
            .connect_timeout(settings.connect_timeout)
            .connect()
            .await
            .map_err(failed),
        GrpcTarget::Unix(path) => {
            let path = Arc::new(path.clone());
            // The URI is not used: the connector always dials the socket.
            Endpoint::from_static("http://localhost")
                .connect_timeout(settings.connect_timeout)
                .connect_with_connector(tower::service_fn(move |_: Uri| dial(path.clone())))
                .await
                .map_err(failed)
        }
    }
}

async fn dial(path: Arc<PathBuf>) -> std::io::Result<TokioIo<UnixStream>> {
    Ok(TokioIo::new(UnixStream::connect(path.as_path()).await?))
}

/// The responses of an open stream, of the stream's kind.
pub(super) enum Inbox {
    Sotw(Streaming<DiscoveryResponse>),
    Delta(Streaming<DeltaDiscoveryResponse>),
}

/// Opens the stream the settings name; `requests` feed it. Resolves once the server sent
/// its response headers.
pub(super) async fn open(
    channel: Channel,
    settings: &StreamSettings,
    requests: UnboundedReceiver<Request>,
) -> Result<Inbox, TransportError> {
    let requests = UnboundedReceiverStream::new(requests);
    let inbox = match (settings.service, settings.delta) {
        (Service::Aggregated, false) => Inbox::Sotw(
            ads(channel)
                .stream_aggregated_resources(requests.filter_map(Request::into_sotw))
                .await?
                .into_inner(),
        ),
        (Service::Aggregated, true) => Inbox::Delta(
            ads(channel)
                .delta_aggregated_resources(requests.filter_map(Request::into_delta))
                .await?
                .into_inner(),
        ),
        (Service::Secrets, false) => Inbox::Sotw(
            sds(channel)
                .stream_secrets(requests.filter_map(Request::into_sotw))
                .await?
                .into_inner(),
        ),
        (Service::Secrets, true) => Inbox::Delta(
            sds(channel)
                .delta_secrets(requests.filter_map(Request::into_delta))
                .await?
                .into_inner(),
        ),
    };
    Ok(inbox)
}

fn ads(channel: Channel) -> AdsClient<Channel> {
    AdsClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

fn sds(channel: Channel) -> SdsClient<Channel> {
    SdsClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

impl Inbox {
    /// The next response, decoded.
    pub(super) async fn next(&mut self) -> Result<Update, TransportError> {
        match self {
            Inbox::Sotw(stream) => stream.message().await?.map(sotw::decode),
            Inbox::Delta(stream) => stream.message().await?.map(delta::decode),
        }
        .ok_or(TransportError::Closed)
    }
}

/// A target as Envoy prints it.
struct Target<'a>(&'a GrpcTarget);

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            GrpcTarget::Tcp(addr) => write!(f, "{addr}"),
            GrpcTarget::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// An error and its causes ("transport error: connection refused").
fn chain(error: &tonic::transport::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}
