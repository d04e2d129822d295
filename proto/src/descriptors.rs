//! Proto layer: the descriptor pool of Envoy's, xDS's, UDPA's and the project's own message
//! types, filled on demand: a type's file and the files it imports are decoded on its first
//! use, so the pool holds what the config in hand names, not all of Envoy's API.
use std::sync::{Mutex, MutexGuard};

use prost_reflect::{DescriptorPool, MessageDescriptor};

/// Envoy's descriptor set (without source info) followed by the project's own files, as
/// build.rs writes them.
static SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

// `FILES` and `MESSAGES`, the index of `SET` (build.rs).
include!(concat!(env!("OUT_DIR"), "/descriptor_index.rs"));

/// The files decoded so far, and which they are.
struct Loaded {
    pool: DescriptorPool,
    files: Vec<bool>,
}

/// The pool, while in use (dropped by [`release_pool`]).
static POOL: Mutex<Option<Loaded>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<Loaded>> {
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The file declaring message `full_name`, if the set has it.
fn file_of(full_name: &str) -> Option<u16> {
    MESSAGES
        .binary_search_by(|(name, _)| (*name).cmp(full_name))
        .ok()
        .map(|i| MESSAGES[i].1)
}

/// Whether the set declares message `full_name` (decodes nothing).
pub fn is_known(full_name: &str) -> bool {
    file_of(full_name).is_some()
}

/// The descriptor of message `full_name`, its file and imports decoded if they were not.
/// `None` when the set does not declare it.
pub fn message(full_name: &str) -> Option<MessageDescriptor> {
    let file = file_of(full_name)?;
    load(&[file]).get_message_by_name(full_name)
}

/// Decodes the files of every message that `text` names as a type URL's last part (after a
/// `/`), so that `Any`s naming them can be read and written: an encoding holds its nested
/// `Any`s' type URLs as plain bytes at every depth, a JSON document in its strings. A name
/// that only looks like one decodes a file more, nothing else.
pub fn load_named_in(text: &[u8]) {
    let files = files_named_in(text);
    if !files.is_empty() {
        load(&files);
    }
}

/// The files of the messages `text` names after a `/`. In an encoding the next field's key
/// may follow a type URL and read as more name characters, so a name is the longest known
/// one that the characters after the `/` start with, cut in their last identifier (a miss
/// only means [`message`] decodes that file when it is asked for).
fn files_named_in(text: &[u8]) -> Vec<u16> {
    let is_name = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.';
    let mut files = Vec::new();
    let mut rest = text;
    while let Some(slash) = rest.iter().position(|b| *b == b'/') {
        rest = &rest[slash + 1..];
        let len = rest.iter().position(|b| !is_name(b)).unwrap_or(rest.len());
        // Name characters are ASCII.
        let run = std::str::from_utf8(&rest[..len]).unwrap_or_default();
        if let Some(dot) = run.rfind('.') {
            files.extend(
                (dot + 2..=run.len())
                    .rev()
                    .find_map(|end| file_of(&run[..end])),
            );
        }
        rest = &rest[len..];
    }
    files
}

/// The shared pool with `files` and their imports decoded (a cheap handle).
fn load(files: &[u16]) -> DescriptorPool {
    let mut slot = lock();
    let loaded = slot.get_or_insert_with(Loaded::new);
    loaded.add(files);
    loaded.pool.clone()
}

impl Loaded {
    fn new() -> Self {
        Self {
            pool: DescriptorPool::new(),
            files: vec![false; FILES.len()],
        }
    }

    /// Decodes `files` and their imports, those not decoded yet, in one batch, imports
    /// first. Handles taken before keep the pool they had.
    fn add(&mut self, files: &[u16]) {
        let mut missing = Vec::new();
        for file in files {
            with_imports(*file, &mut self.files, &mut missing);
        }
        if missing.is_empty() {
            return;
        }
        // Entries of a descriptor set, concatenated, are a set.
        let mut batch = Vec::new();
        for file in missing {
            let (start, end, _) = FILES[usize::from(file)];
            batch.extend_from_slice(&SET[start as usize..end as usize]);
        }
        self.pool
            .decode_file_descriptor_set(batch.as_slice())
            .expect("the embedded descriptor set decodes");
    }
}

/// Appends `file`'s imports (depth first) and then `file` to `out`, skipping what is decoded
/// or already listed (marked in `seen`).
fn with_imports(file: u16, seen: &mut [bool], out: &mut Vec<u16>) {
    if std::mem::replace(&mut seen[usize::from(file)], true) {
        return;
    }
    for import in FILES[usize::from(file)].2 {
        with_imports(*import, seen, out);
    }
    out.push(file);
}

/// Drops the pool; its memory is freed once no handle or descriptor refers to it.
pub fn release_pool() {
    let pool = lock().take();
    drop(pool);
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "envoy.config.cluster.v3.Cluster";
    const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";

    #[test]
    fn a_type_brings_its_file_and_imports_only() {
        let mut loaded = Loaded::new();
        loaded.add(&[file_of(CLUSTER).unwrap()]);
        let pool = &loaded.pool;
        assert!(pool.get_message_by_name(CLUSTER).is_some());
        assert!(pool
            .get_message_by_name("envoy.config.core.v3.Address")
            .is_some());
        assert!(pool.get_message_by_name(ROUTER).is_none());
        assert!(
            pool.files().len() < FILES.len() / 4,
            "{}",
            pool.files().len()
        );
        let before = pool.files().len();
        loaded.add(&[file_of(CLUSTER).unwrap()]);
        assert_eq!(loaded.pool.files().len(), before, "decoded once");
    }

    #[test]
    fn names_are_looked_up_without_decoding() {
        assert!(is_known(ROUTER));
        assert!(!is_known("no.such.Type"));
        assert!(message("no.such.Type").is_none());
        assert_eq!(message(ROUTER).unwrap().full_name(), ROUTER);
    }

    /// Type URLs in an encoding (here a length-prefixed field) or in text, any prefix.
    #[test]
    fn type_urls_name_the_files_to_decode() {
        // The Router's URL is followed by a key that reads as a digit (field 6).
        let bytes = format!("\x12\x05xtype.googleapis.com/{ROUTER}2\x02/a/{CLUSTER}\"}}");
        let files = files_named_in(bytes.as_bytes());
        assert_eq!(files, [file_of(ROUTER).unwrap(), file_of(CLUSTER).unwrap()]);
        assert!(files_named_in(b"type.googleapis.com/no.such.Type /").is_empty());
    }

    #[test]
    fn every_file_decodes_with_its_imports() {
        let mut loaded = Loaded::new();
        loaded.add(&(0..FILES.len() as u16).collect::<Vec<_>>());
        assert_eq!(loaded.pool.files().len(), FILES.len());
        assert_eq!(loaded.pool.all_messages().len(), MESSAGES.len());
    }
}
