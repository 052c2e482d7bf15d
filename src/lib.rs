//! certpin: provisions PKCS12 client certificates, pinned per service, for
//! the outgoing connections of deployed apps.

pub mod pkcs12;
