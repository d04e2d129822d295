//! Agent thread: loads config, translates it into immutable snapshots, publishes them to shards.
