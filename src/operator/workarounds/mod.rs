//! The room for workarounds: code that exists because kube-rs lacks
//! something, not because certpin's domain needs it. Each module says what
//! upstream change deletes it.
//!
//! - [`repoll`]: polls the controller's result stream on a tick, bounding
//!   kube-runtime 5.0's lost wake-up in `SplitCase`. Delete when kube's
//!   `SplitCase` wakes the other half.
//! - [`events`]: an Event publisher whose series key includes the note.
//!   Delete when kube's `EventKey` includes the note; use its `Recorder`.

pub mod events;
pub mod repoll;
