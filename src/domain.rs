//! Domain newtypes that parse: a value of these types is always valid.
//!
//! `DomainName` is a watched recipient domain; `MxHost` is the exchange of an
//! MX record; `Mx` is one MX record. Names are normalised once, here: lower
//! case, no trailing dot, internationalised names as A-labels (`xn--…`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid domain or host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("{0:?} is not a valid internationalised domain name")]
    Idna(String),
    #[error("{name:?}: name longer than 253 characters")]
    TooLong { name: String },
    #[error("{name:?}: empty label (two dots in a row?)")]
    EmptyLabel { name: String },
    #[error("{name:?}: label {label:?} is longer than 63 characters")]
    LabelTooLong { name: String, label: String },
    #[error("{name:?}: label {label:?} has a character other than a-z, 0-9, '-' and '_'")]
    BadCharacter { name: String, label: String },
    #[error("{name:?}: label {label:?} starts or ends with '-'")]
    Hyphen { name: String, label: String },
    #[error("{name:?}: a domain needs at least two labels")]
    SingleLabel { name: String },
}

/// Normalise and validate a DNS name: trim, lower-case, strip one trailing
/// dot, IDN to A-labels, then check the label syntax.
fn normalise(input: &str) -> Result<String, NameError> {
    let trimmed = input.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    let ascii = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(trimmed).map_err(|_| NameError::Idna(input.trim().to_string()))?
    };
    if ascii.len() > 253 {
        return Err(NameError::TooLong { name: ascii });
    }
    for label in ascii.split('.') {
        let err_label = || label.to_string();
        if label.is_empty() {
            return Err(NameError::EmptyLabel {
                name: ascii.clone(),
            });
        }
        if label.len() > 63 {
            return Err(NameError::LabelTooLong {
                name: ascii.clone(),
                label: err_label(),
            });
        }
        // Underscores occur in real host names (and in service labels); we
        // accept them rather than refuse a record the DNS happily serves.
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(NameError::BadCharacter {
                name: ascii.clone(),
                label: err_label(),
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::Hyphen {
                name: ascii.clone(),
                label: err_label(),
            });
        }
    }
    Ok(ascii)
}

/// A watched recipient domain, normalised (`Example.COM.` → `example.com`,
/// `bücher.de` → `xn--bcher-kva.de`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainName(String);

impl DomainName {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        let name = normalise(input)?;
        if !name.contains('.') {
            return Err(NameError::SingleLabel { name });
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The fully qualified form with the trailing dot, for DNS queries.
    pub fn fqdn(&self) -> String {
        format!("{}.", self.0)
    }
}

impl TryFrom<String> for DomainName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<DomainName> for String {
    fn from(value: DomainName) -> Self {
        value.0
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The exchange host of an MX record, normalised like [`DomainName`]. The
/// root (`.`, as in a null MX) is the empty string here and displays as `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MxHost(String);

impl MxHost {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        if input.trim() == "." {
            return Ok(Self::root());
        }
        normalise(input).map(Self)
    }

    pub fn root() -> Self {
        Self(String::new())
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_str(&self) -> &str {
        if self.is_root() { "." } else { &self.0 }
    }
}

impl TryFrom<String> for MxHost {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<MxHost> for String {
    fn from(value: MxHost) -> Self {
        value.as_str().to_string()
    }
}

impl fmt::Display for MxHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One MX record. Ordered by preference, then exchange, so that a sorted
/// `Vec<Mx>` is the canonical form of an MX set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mx {
    pub preference: u16,
    pub exchange: MxHost,
}

/// An MX set as every outward shape writes it: `10 a.example, 20
/// b.example`, in the set's order (sorted where it is stored); `-` for none.
pub fn mx_set(mx: &[Mx]) -> String {
    if mx.is_empty() {
        return "-".into();
    }
    mx.iter().map(Mx::to_string).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Mx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.preference, self.exchange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_case_trailing_dot_and_idn() {
        assert_eq!(
            DomainName::parse("Example.COM.").unwrap().as_str(),
            "example.com"
        );
        assert_eq!(DomainName::parse("  web.de ").unwrap().as_str(), "web.de");
        assert_eq!(
            DomainName::parse("bücher.de").unwrap().as_str(),
            "xn--bcher-kva.de"
        );
        assert_eq!(
            DomainName::parse("xn--bcher-kva.de").unwrap().as_str(),
            "xn--bcher-kva.de"
        );
    }

    #[test]
    fn rejects_bad_names_with_a_reason() {
        assert_eq!(DomainName::parse(""), Err(NameError::Empty));
        assert_eq!(DomainName::parse("."), Err(NameError::Empty));
        assert!(matches!(
            DomainName::parse("localhost"),
            Err(NameError::SingleLabel { .. })
        ));
        assert!(matches!(
            DomainName::parse("a..b"),
            Err(NameError::EmptyLabel { .. })
        ));
        assert!(matches!(
            DomainName::parse("-a.com"),
            Err(NameError::Hyphen { .. })
        ));
        assert!(matches!(
            DomainName::parse("a b.com"),
            Err(NameError::BadCharacter { .. })
        ));
        let long = format!("{}.com", "a".repeat(64));
        assert!(matches!(
            DomainName::parse(&long),
            Err(NameError::LabelTooLong { .. })
        ));
    }

    #[test]
    fn mx_host_root_is_dot() {
        let root = MxHost::parse(".").unwrap();
        assert!(root.is_root());
        assert_eq!(root.to_string(), ".");
        assert_eq!(
            MxHost::parse("MX01.Mail.iCloud.com.").unwrap().as_str(),
            "mx01.mail.icloud.com"
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_is_idempotent(s in "\\PC{0,80}") {
            if let Ok(d) = DomainName::parse(&s) {
                prop_assert_eq!(DomainName::parse(d.as_str()).unwrap(), d);
            }
        }
    }
}
