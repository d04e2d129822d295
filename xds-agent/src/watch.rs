//! Bootstrap file watching: inotify on the file's directory (editors and `mv` replace files),
//! debounced, turned into reload commands for the agent loop.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

use crate::agent::AgentCommand;

/// Changes closer together than this become one reload.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Starts watching; the watcher stops when the returned value is dropped.
pub fn spawn(
    path: &Path,
    commands: UnboundedSender<AgentCommand>,
) -> Option<notify::RecommendedWatcher> {
    let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = file.file_name()?.to_owned();
    let (changed_tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
                && !event.kind.is_access()
            {
                let _ = changed_tx.send(());
            }
        }
    })
    .map_err(|e| tracing::warn!("cannot watch {}: {e}; hot reload disabled", file.display()))
    .ok()?;
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!("cannot watch {}: {e}; hot reload disabled", dir.display());
        return None;
    }
    tokio::spawn(async move {
        while changed.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while changed.try_recv().is_ok() {}
            if commands.send(AgentCommand::Reload).is_err() {
                return;
            }
        }
    });
    Some(watcher)
}
