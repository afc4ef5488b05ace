//! Vocabulary: closed sets of names. [`named!`] declares an enum whose
//! variants are each written as one fixed word everywhere they leave the
//! program: the database, JSON, YAML, the CLI and logs. No IO.

/// Declares a closed set of names: the enum, `ALL`, `as_str`, `parse`,
/// `FromStr` (with an error that lists the names), `Display` and serde,
/// all from one table of variant ⇒ word. The store gives each its SQL
/// encoding (`store/codec.rs`).
macro_rules! named {
    ($(#[$m:meta])* $vis:vis enum $name:ident {
        $($(#[$vm:meta])* $variant:ident => $s:literal),+ $(,)?
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
                 serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $variant),+
        }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
            /// The variant this word names, if any.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$variant),)+ _ => None }
            }
        }
        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $name::parse(s).ok_or_else(|| {
                    $crate::names::unknown(stringify!($name), s, $name::ALL.iter().map(|v| v.as_str()))
                })
            }
        }
        /// A name compares equal to its word.
        impl PartialEq<&str> for $name {
            fn eq(&self, word: &&str) -> bool {
                self.as_str() == *word
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}
pub(crate) use named;

/// "unknown window kind \"x\" (one of: a, b)": `type_name` in words.
pub fn unknown<'a>(type_name: &str, s: &str, names: impl Iterator<Item = &'a str>) -> String {
    let mut what = String::new();
    for c in type_name.chars() {
        if c.is_uppercase() && !what.is_empty() {
            what.push(' ');
        }
        what.push(c.to_ascii_lowercase());
    }
    format!(
        "unknown {what} {s:?} (one of: {})",
        names.collect::<Vec<_>>().join(", ")
    )
}
