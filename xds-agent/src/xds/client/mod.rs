//! xDS transport: the ADS/SDS client. One task per stream keeps the agent's subscriptions,
//! hands it each response as an `Update`, sends its ACKs and NACKs, and reconnects with
//! back-off (Envoy's behaviour, state of the world and Delta).

mod backoff;
mod delta;
mod sotw;
mod subscriptions;
mod task;
mod transport;

use tokio::sync::mpsc::{self, UnboundedSender};
use tracing::debug;

use super::{ClientEvent, Rejection, StreamSettings};

/// Starts a stream task on the current tokio runtime (current-thread). It connects, keeps
/// the subscriptions, reconnects with back-off, and reports on `events`. It ends when every
/// handle is dropped or `events` is closed.
pub fn spawn(settings: StreamSettings, events: UnboundedSender<ClientEvent>) -> ClientHandle {
    let (commands, inbox) = mpsc::unbounded_channel();
    tokio::spawn(task::run(settings, inbox, events));
    ClientHandle { commands }
}

/// The agent's side of a stream task.
#[derive(Clone, Debug)]
pub struct ClientHandle {
    commands: UnboundedSender<Command>,
}

/// What the agent asks of the stream task.
#[derive(Debug)]
enum Command {
    Subscribe {
        type_url: String,
        names: Vec<String>,
    },
    Verdict {
        type_url: String,
        nonce: String,
        rejection: Option<Rejection>,
    },
}

impl ClientHandle {
    /// Sets the names subscribed for `type_url` (empty = wildcard). Sends a request on the
    /// live stream when the set changed (state of the world: the full name list; Delta:
    /// subscribe/unsubscribe diffs); while a response of the type awaits its verdict, the
    /// answer carries the change.
    pub fn subscribe(&self, type_url: &str, names: Vec<String>) {
        self.send(Command::Subscribe {
            type_url: type_url.to_owned(),
            names,
        });
    }

    /// Answers the update with `nonce`: ACK (None) or NACK with `error_detail` {code 13
    /// INTERNAL, the rejection's message}, as Envoy. Every update must be answered once, in
    /// the order received; an answer may come late. Delta: the resources of an accepted
    /// update, less the rejection's names, are held (reported as `initial_resource_versions`
    /// on reconnect).
    pub fn verdict(&self, type_url: &str, nonce: &str, rejection: Option<Rejection>) {
        self.send(Command::Verdict {
            type_url: type_url.to_owned(),
            nonce: nonce.to_owned(),
            rejection,
        });
    }

    fn send(&self, command: Command) {
        if self.commands.send(command).is_err() {
            debug!("xDS stream task has ended; command dropped");
        }
    }
}
