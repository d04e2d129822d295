//! Admin server: Envoy's admin paths and output formats, served on the agent thread.
