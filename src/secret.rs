//! Vocabulary: a secret (an alert's signing key, a passive DNS API key)
//! that never prints, in logs or in `Debug`.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    pub fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The secret itself, for the one header or signature that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}
