//! Parsers from bytes to [`Facts`](super::Facts), one per input format.

pub mod dsn;
