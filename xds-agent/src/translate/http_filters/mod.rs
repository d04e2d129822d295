//! Translator: HTTP filters — a registry keyed by type URL from each filter's config to its
//! model, and each filter's supported surface.
use super::surface::{AnySlot, Surface};

pub const SURFACE: &[Surface] = &[];

pub const ANY_SLOTS: &[AnySlot] = &[];
