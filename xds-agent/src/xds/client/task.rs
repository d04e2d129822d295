//! xDS transport: the stream task — connect, open the stream, hand responses to the agent,
//! send its verdicts and subscription changes, reconnect with back-off.

use std::future::Future;

use tokio::{
    sync::mpsc::{self, UnboundedReceiver, UnboundedSender},
    time::sleep,
};
use tracing::debug;

use super::{
    backoff::Backoff,
    subscriptions::{Request, Subscriptions},
    transport::{self, TransportError},
    Command,
};
use crate::xds::{ClientEvent, StreamSettings};

/// Runs streams until the agent drops every handle or stops listening for events.
pub(super) async fn run(
    settings: StreamSettings,
    commands: UnboundedReceiver<Command>,
    events: UnboundedSender<ClientEvent>,
) {
    let service = settings.service;
    let mut agent = Agent {
        subscriptions: Subscriptions::new(&settings),
        commands,
        events,
        outbox: None,
        got_response: false,
    };
    let mut backoff = Backoff::new();
    loop {
        let Some(failure) = agent.stream_once(&settings).await else {
            return;
        };
        agent.outbox = None;
        agent.subscriptions.end_stream();
        if std::mem::take(&mut agent.got_response) {
            backoff.reset();
        }
        debug!(?service, %failure, "xDS stream ended");
        let reason = failure.to_string();
        let gone = (agent.events)
            .send(ClientEvent::Disconnected { service, reason })
            .is_err();
        if gone || agent.serve(sleep(backoff.next_delay())).await.is_none() {
            return;
        }
    }
}

/// The task's link with the agent, and the state of the current stream attempt.
struct Agent {
    subscriptions: Subscriptions,
    commands: UnboundedReceiver<Command>,
    events: UnboundedSender<ClientEvent>,
    /// The live stream's requests.
    outbox: Option<UnboundedSender<Request>>,
    /// The current stream got a response (the back-off then starts over).
    got_response: bool,
}

impl Agent {
    /// Connects and serves one stream until it fails (Some(why)); None when the agent is gone.
    async fn stream_once(&mut self, settings: &StreamSettings) -> Option<TransportError> {
        let service = settings.service;
        let channel = match self.serve(transport::connect(settings)).await? {
            Ok(channel) => channel,
            Err(e) => return Some(e),
        };
        let (outbox, requests) = mpsc::unbounded_channel();
        for request in self.subscriptions.start_stream() {
            outbox.send(request).ok()?;
        }
        self.outbox = Some(outbox);
        let mut inbox = match self
            .serve(transport::open(channel, settings, requests))
            .await?
        {
            Ok(inbox) => inbox,
            Err(e) => return Some(e),
        };
        // Connected once the server answered the stream with its response headers: it
        // accepted the call (the first requests are already on their way).
        (self.events)
            .send(ClientEvent::Connected { service })
            .ok()?;
        loop {
            let update = match self.serve(inbox.next()).await? {
                Ok(update) => update,
                Err(e) => return Some(e),
            };
            self.got_response = true;
            debug!(type_url = %update.type_url, nonce = %update.nonce, "xDS response");
            if let Some(update) = self.subscriptions.receive(update) {
                (self.events)
                    .send(ClientEvent::Update { service, update })
                    .ok()?;
            }
        }
    }

    /// Drives `work` to its end while applying the agent's commands (their requests go to
    /// the live stream); None when every handle is dropped.
    async fn serve<F: Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return Some(output),
                command = self.commands.recv() => {
                    let request = match command? {
                        Command::Subscribe { type_url, names } => {
                            self.subscriptions.subscribe(&type_url, names)
                        }
                        Command::Verdict { type_url, nonce, rejection } => {
                            self.subscriptions.verdict(&type_url, &nonce, rejection)
                        }
                    };
                    if let (Some(request), Some(outbox)) = (request, &self.outbox) {
                        // A send fails only once the stream is gone; it is then re-stated
                        // from the subscriptions on the next stream.
                        let _ = outbox.send(request);
                    }
                }
            }
        }
    }
}
