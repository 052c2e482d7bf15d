//! Act: the writes a decision calls for, in the order that keeps apps
//! running, after the quiet window; then the status and Events.

pub mod apply;
pub mod cleanup;
pub mod execute;
pub mod finalizer;
pub mod publish;
pub mod quiet;
pub mod stop_start;
