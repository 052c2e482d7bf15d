//! Scenarios of whole reconcile passes, in process: the real
//! [`reconcile`](super::reconcile) against an API server in memory
//! ([`fake`]), so the I/O steps (finalizer, reads, applies, StopStart,
//! unwiring, cleanup, status, Events) are exercised in milliseconds without
//! a cluster. tests/edits.rs and tests/operator.rs hold the end-to-end
//! versions of these cases.

// `merge` serves the plan's unit tests too.
pub(super) mod fake;
mod world;

mod api_refusals;
mod collisions;
mod consistency;
mod deletion;
mod following;
mod health;
mod kinds;
mod quiet;
mod request;
mod restart;
mod secrets;
mod stop_start;
mod strategy;
mod trust;
mod wiring;
