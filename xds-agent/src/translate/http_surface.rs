//! Translator: the supported surface of the HTTP connection manager and route configuration
//! (see `surface.rs` for how the walker uses it).
use super::surface::{AnySlot, Surface};

pub const SURFACE: &[Surface] = &[];

pub const ANY_SLOTS: &[AnySlot] = &[];
