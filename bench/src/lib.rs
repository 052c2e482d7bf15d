//! The parts of certpin-bench that certpin's own fault tests use too: a
//! library, so what only the tests call (409 injection) is public API here
//! rather than dead code in the bench binary.

pub mod proxy;
