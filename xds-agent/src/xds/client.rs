//! xDS transport: ADS/SDS streams over tonic (state of the world and Delta), ACK/NACK,
//! reconnect with back-off. (Placeholder API until the client lands.)
use tokio::sync::mpsc::UnboundedSender;

use super::{ClientEvent, Rejection, StreamSettings};

#[derive(Clone)]
pub struct ClientHandle;

pub fn spawn(_settings: StreamSettings, _events: UnboundedSender<ClientEvent>) -> ClientHandle {
    ClientHandle
}

impl ClientHandle {
    pub fn subscribe(&self, _type_url: &str, _names: Vec<String>) {}
    pub fn verdict(&self, _type_url: &str, _nonce: &str, _rejection: Option<Rejection>) {}
}
