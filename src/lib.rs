//! certpin: provisions PKCS12 client certificates, pinned per service, for
//! the outgoing connections of deployed apps.

pub mod ca;
pub mod cli;
pub mod endpoint;
pub mod fuzzing;
pub mod names;
pub mod operator;
pub mod pkcs12;
pub mod resource;
pub mod settings;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
