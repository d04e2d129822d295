//! Process signals: SIGTERM and SIGINT start a graceful shutdown.
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc::UnboundedSender,
};

use crate::agent::AgentCommand;

pub fn spawn(commands: UnboundedSender<AgentCommand>) {
    for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
        let commands = commands.clone();
        match signal(kind) {
            Ok(mut stream) => {
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        let _ = commands.send(AgentCommand::Shutdown);
                    }
                });
            }
            Err(e) => tracing::warn!("cannot install handler for {kind:?}: {e}"),
        }
    }
}
