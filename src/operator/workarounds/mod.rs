//! The room for workarounds: code that exists because kube-rs, glibc or an
//! older Kubernetes lacks something, not because certpin's domain needs it.
//! Each module says what upstream change deletes it and what was measured
//! to keep it; `certpin-bench workarounds` re-measures TCP_NODELAY and the
//! reads at a mark.
//!
//! - [`client`]: kube's client stack with a retry policy that leaves a 504
//!   on a versioned GET to the caller (needed by `freshness`). Delete with
//!   `freshness`, or when kube's retry policy can skip one status. (Its
//!   copy of kube's builder for TCP_NODELAY is deleted: re-measured with
//!   kube 5.0, no difference.)
//! - [`freshness`]: reads from the API server's watch cache at the newest
//!   resourceVersion certpin has seen. Delete when kube-runtime offers
//!   consistent reads from a reflector (or the read-your-writes of
//!   KEP-5504 is enough for every supported Kubernetes).
//! - [`repoll`]: polls the controller's result stream on a tick, bounding
//!   kube-runtime 5.0's lost wake-up in `SplitCase`. Delete when kube's
//!   `SplitCase` wakes the other half.
//! - [`events`]: an Event publisher whose series key includes the note.
//!   Delete when kube's `EventKey` includes the note; use its `Recorder`.
//! - [`arenas`]: one glibc malloc arena. Delete when the image links
//!   another allocator or glibc returns arena pages on its own.

pub mod arenas;
pub mod client;
pub mod events;
pub mod freshness;
pub mod repoll;
