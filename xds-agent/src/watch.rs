//! File watching (the bootstrap, secret files and the files they name): inotify on each
//! file's directory (editors and `mv` replace files) or on a whole directory, debounced,
//! turned into a call on the agent loop's runtime.
use std::{
    collections::BTreeSet,
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};

/// Changes closer together than this become one call.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Starts watching `files` and every entry of `dirs`; each burst of changes runs `changed`
/// once, until it returns false. The watcher stops when the returned value is dropped.
pub fn spawn(
    files: &[PathBuf],
    dirs: &[PathBuf],
    changed: impl Fn() -> bool + Send + 'static,
) -> Option<RecommendedWatcher> {
    // (directory, the file names in it that matter; none: every entry)
    let mut watched: Vec<(PathBuf, Option<BTreeSet<OsString>>)> = dirs
        .iter()
        .map(|dir| {
            (
                std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone()),
                None,
            )
        })
        .collect();
    for file in files {
        let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
        let dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let name = file.file_name()?.to_owned();
        match watched.iter_mut().find(|(d, _)| *d == dir) {
            Some((_, Some(names))) => {
                names.insert(name);
            }
            Some((_, None)) => {}
            None => watched.push((dir, Some(BTreeSet::from([name])))),
        }
    }
    let (changed_tx, mut bursts) = tokio::sync::mpsc::unbounded_channel();
    let filter = watched.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        let matters = |path: &PathBuf| {
            filter.iter().any(|(dir, names)| {
                path.parent() == Some(dir.as_path())
                    && names
                        .as_ref()
                        .is_none_or(|n| path.file_name().is_some_and(|f| n.contains(f)))
            })
        };
        if !event.kind.is_access() && event.paths.iter().any(matters) {
            let _ = changed_tx.send(());
        }
    })
    .map_err(|e| tracing::warn!("cannot watch files: {e}; changes will not be seen"))
    .ok()?;
    for (dir, _) in &watched {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(
                "cannot watch {}: {e}; its changes will not be seen",
                dir.display()
            );
            return None;
        }
    }
    tokio::spawn(async move {
        while bursts.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while bursts.try_recv().is_ok() {}
            if !changed() {
                return;
            }
        }
    });
    Some(watcher)
}
