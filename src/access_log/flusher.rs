//! The access-log flusher: one thread per process that writes the batches of lines shards
//! hand it (files opened once with O_APPEND, stdout, stderr), so a slow or blocked sink stalls
//! only this thread. Its queue is bounded (`QUEUE_BATCHES`): shards drop what does not fit.
use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{self, Write},
    path::PathBuf,
    time::Duration,
};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use model::access_log::LogSink;

/// Batches waiting at most (each holds what one shard's loop turn logged to one log, up to
/// 64 KiB).
const QUEUE_BATCHES: usize = 1024;

/// Lines for one sink.
pub struct Batch {
    pub sink: LogSink,
    pub bytes: Vec<u8>,
    pub lines: u64,
}

enum Message {
    Lines(Batch),
    /// Answered once everything queued before it is written.
    Barrier(Sender<()>),
}

/// What a shard holds: the flusher's queue.
#[derive(Clone)]
pub struct FlusherHandle(Sender<Message>);

impl FlusherHandle {
    /// A queue nothing reads (unit tests that write no logs).
    #[cfg(test)]
    pub fn unread() -> Self {
        FlusherHandle(crossbeam_channel::bounded(0).0)
    }

    /// Queues `batch`; false when the queue is full (or the flusher is gone).
    pub fn send(&self, batch: Batch) -> bool {
        match self.0.try_send(Message::Lines(batch)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// The flusher thread (it ends with the process).
pub struct Flusher(FlusherHandle);

impl Flusher {
    pub fn start() -> io::Result<(Flusher, FlusherHandle)> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_BATCHES);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run(rx))?;
        let handle = FlusherHandle(tx);
        Ok((Flusher(handle.clone()), handle))
    }

    /// Waits up to `within` until what is queued now is written (at exit).
    pub fn finish(&self, within: Duration) {
        let (done, written) = crossbeam_channel::bounded(1);
        if self
            .0
             .0
            .send_timeout(Message::Barrier(done), within)
            .is_ok()
        {
            let _ = written.recv_timeout(within);
        }
    }
}

fn run(messages: Receiver<Message>) {
    let mut files: HashMap<PathBuf, File> = HashMap::new();
    let mut failing: HashMap<String, io::ErrorKind> = HashMap::new();
    for message in messages {
        let batch = match message {
            Message::Lines(batch) => batch,
            Message::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let result = match &batch.sink {
            LogSink::Stdout => io::stdout().lock().write_all(&batch.bytes),
            LogSink::Stderr => io::stderr().lock().write_all(&batch.bytes),
            LogSink::Path(path) => append(&mut files, path, &batch.bytes),
        };
        // Said once per sink and kind of failure, not per batch.
        let sink = format!("{:?}", batch.sink);
        match result {
            Ok(()) => {
                failing.remove(&sink);
            }
            Err(e) => {
                if failing.insert(sink.clone(), e.kind()) != Some(e.kind()) {
                    tracing::warn!(lines = batch.lines, "access log {sink}: {e}");
                }
            }
        }
    }
}

fn append(files: &mut HashMap<PathBuf, File>, path: &PathBuf, bytes: &[u8]) -> io::Result<()> {
    if !files.contains_key(path) {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        files.insert(path.clone(), file);
    }
    files
        .get_mut(path)
        .expect("inserted above")
        .write_all(bytes)
}
