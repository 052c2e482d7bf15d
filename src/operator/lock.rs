//! Locking certpin's in-memory maps.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`. A panic while holding the lock leaves a valid map (every
/// update is a single insert or remove): keep using it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
