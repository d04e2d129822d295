//! Access-log writers on a shard: renders a record with its compiled format and appends the
//! line to the sink (file opened once per shard with O_APPEND, or stdout/stderr).
use std::{
    cell::RefCell,
    collections::HashMap,
    fs::{File, OpenOptions},
    io::Write,
    path::PathBuf,
};

use xds_agent::access_log::{AccessLog, ConnectionRecord, LogSink};

#[derive(Default)]
pub struct LogWriters {
    files: RefCell<HashMap<PathBuf, File>>,
    line: RefCell<Vec<u8>>,
}

impl LogWriters {
    /// Writes one line per log. Appends of one line to a regular file complete in the page
    /// cache; a failed write is reported once per occurrence and the connection is unaffected.
    pub fn write(&self, logs: &[std::sync::Arc<AccessLog>], record: &ConnectionRecord) {
        let mut line = self.line.borrow_mut();
        for log in logs {
            line.clear();
            log.render(record, &mut line);
            let result = match &log.sink {
                LogSink::Stdout => std::io::stdout().lock().write_all(&line),
                LogSink::Stderr => std::io::stderr().lock().write_all(&line),
                LogSink::Path(path) => self.append(path, &line),
            };
            if let Err(e) = result {
                tracing::warn!("access log {:?}: {e}", log.sink);
            }
        }
    }

    fn append(&self, path: &PathBuf, line: &[u8]) -> std::io::Result<()> {
        let mut files = self.files.borrow_mut();
        if !files.contains_key(path) {
            files.insert(
                path.clone(),
                OpenOptions::new().create(true).append(true).open(path)?,
            );
        }
        files.get_mut(path).expect("inserted above").write_all(line)
    }
}
