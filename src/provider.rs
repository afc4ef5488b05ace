//! Which mailbox provider runs an MX host.
//!
//! A built-in table of host suffixes (extensible from the watchlist) maps
//! `mx01.mail.icloud.com` to `icloud`. Hosts nobody listed fall back to
//! their registrable domain by the public suffix list, so two unknown hosts
//! of one organisation still count as one provider. No IO here.

use std::collections::BTreeSet;

use crate::domain::{Mx, MxHost};

/// One provider: a stable id (used in storage and events), a display name and
/// the host suffixes that belong to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRule {
    pub id: String,
    pub name: String,
    pub suffixes: Vec<String>,
}

/// (id, display name, host suffixes). A host matches a suffix when it equals
/// it or ends with `.suffix`.
const BUILTIN: &[(&str, &str, &[&str])] = &[
    (
        "icloud",
        "Apple iCloud",
        &["mail.icloud.com", "icloud.com", "me.com", "mac.com"],
    ),
    (
        "google",
        "Google",
        &["google.com", "googlemail.com", "aspmx.l.google.com"],
    ),
    (
        "microsoft",
        "Microsoft 365 / Outlook.com",
        &[
            "mail.protection.outlook.com",
            "outlook.com",
            "hotmail.com",
            "olc.protection.outlook.com",
        ],
    ),
    (
        "yahoo",
        "Yahoo / AOL",
        &["yahoodns.net", "yahoo.com", "aol.com"],
    ),
    (
        "united-internet",
        "GMX / web.de (United Internet)",
        &["gmx.net", "gmx.de", "gmx.com", "web.de"],
    ),
    (
        "ionos",
        "IONOS / 1&1",
        &[
            "ionos.com",
            "ionos.de",
            "1and1.com",
            "1and1.co.uk",
            "kundenserver.de",
            "perfora.net",
        ],
    ),
    (
        "proofpoint",
        "Proofpoint",
        &["pphosted.com", "ppe-hosted.com", "proofpoint.com"],
    ),
    (
        "mimecast",
        "Mimecast",
        &["mimecast.com", "mimecast.co.za", "mimecast-offshore.com"],
    ),
    (
        "barracuda",
        "Barracuda",
        &[
            "barracudanetworks.com",
            "ess.barracudanetworks.com",
            "cuda-inc.com",
        ],
    ),
    ("cisco", "Cisco Secure Email", &["iphmx.com"]),
    (
        "zoho",
        "Zoho",
        &["zoho.com", "zoho.eu", "zoho.in", "zohomail.com"],
    ),
    (
        "fastmail",
        "Fastmail",
        &["messagingengine.com", "fastmail.com"],
    ),
    ("yandex", "Yandex", &["yandex.net", "yandex.ru"]),
    ("mailru", "Mail.ru", &["mail.ru"]),
    ("proton", "Proton", &["protonmail.ch", "proton.me"]),
];

/// Classifies MX hosts. Cheap to clone behind an `Arc`; built once from the
/// config.
#[derive(Debug, Clone)]
pub struct Providers {
    /// (suffix, provider id), longest suffix first so the most specific wins.
    suffixes: Vec<(String, String)>,
    names: Vec<(String, String)>,
}

impl Default for Providers {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Providers {
    /// The built-in table plus `extra` rules. An extra rule with a built-in
    /// id adds suffixes to that provider; a suffix listed twice goes to the
    /// user's rule.
    pub fn new(extra: &[ProviderRule]) -> Self {
        let mut names: Vec<(String, String)> = BUILTIN
            .iter()
            .map(|(id, name, _)| (id.to_string(), name.to_string()))
            .collect();
        let mut suffixes: Vec<(String, String)> = Vec::new();
        for rule in extra {
            if !names.iter().any(|(id, _)| id == &rule.id) {
                names.push((rule.id.clone(), rule.name.clone()));
            }
            for s in &rule.suffixes {
                suffixes.push((s.clone(), rule.id.clone()));
            }
        }
        for (id, _, list) in BUILTIN {
            for s in *list {
                if !suffixes.iter().any(|(have, _)| have == s) {
                    suffixes.push((s.to_string(), id.to_string()));
                }
            }
        }
        // Stable sort keeps the user's rules ahead of built-ins of equal length.
        suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Self { suffixes, names }
    }

    /// The provider id of one host: a table id, else the registrable domain
    /// (`mx.example.co.uk` → `example.co.uk`), else the host itself.
    pub fn classify(&self, host: &MxHost) -> String {
        let h = host.as_str();
        for (suffix, id) in &self.suffixes {
            if h == suffix
                || (h.len() > suffix.len()
                    && h.ends_with(suffix.as_str())
                    && h.as_bytes()[h.len() - suffix.len() - 1] == b'.')
            {
                return id.clone();
            }
        }
        psl::domain_str(h).unwrap_or(h).to_string()
    }

    /// The set of providers serving an MX set (the root of a null MX has none).
    pub fn of_set(&self, mx: &[Mx]) -> BTreeSet<String> {
        mx.iter()
            .filter(|m| !m.exchange.is_root())
            .map(|m| self.classify(&m.exchange))
            .collect()
    }

    /// Whether `id` names a provider of the table (built-in or user-defined),
    /// as opposed to a registrable-domain fallback.
    pub fn is_known(&self, id: &str) -> bool {
        self.names.iter().any(|(known, _)| known == id)
    }

    /// Display name for an id; fallback ids display as themselves.
    pub fn display_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.names
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, name)| name.as_str())
            .unwrap_or(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> MxHost {
        MxHost::parse(s).unwrap()
    }

    #[test]
    fn classifies_builtin_providers() {
        let p = Providers::default();
        let cases = [
            ("mx01.mail.icloud.com", "icloud"),
            ("aspmx.l.google.com", "google"),
            ("alt1.aspmx.l.google.com", "google"),
            ("example-com.mail.protection.outlook.com", "microsoft"),
            ("mta5.am0.yahoodns.net", "yahoo"),
            ("mx00.emig.gmx.net", "united-internet"),
            ("mx-ha03.web.de", "united-internet"),
            ("mx00.ionos.de", "ionos"),
            ("mx0a-00123.pphosted.com", "proofpoint"),
            ("eu-smtp-inbound-1.mimecast.com", "mimecast"),
            ("d123.ess.barracudanetworks.com", "barracuda"),
            ("mx1.hc123-45.iphmx.com", "cisco"),
            ("mx.zoho.eu", "zoho"),
            ("in1-smtp.messagingengine.com", "fastmail"),
            ("mx.yandex.net", "yandex"),
            ("mxs.mail.ru", "mailru"),
            ("mail.protonmail.ch", "proton"),
        ];
        for (h, want) in cases {
            assert_eq!(p.classify(&host(h)), want, "{h}");
            assert!(p.is_known(want));
        }
    }

    #[test]
    fn unknown_hosts_fall_back_to_registrable_domain() {
        let p = Providers::default();
        assert_eq!(p.classify(&host("mx1.example.co.uk")), "example.co.uk");
        assert_eq!(p.classify(&host("mail.example.com")), "example.com");
        // A suffix must match on a label boundary.
        assert_eq!(p.classify(&host("notgoogle.com")), "notgoogle.com");
        assert!(!p.is_known("example.com"));
    }

    #[test]
    fn user_rules_extend_and_override() {
        let p = Providers::new(&[
            ProviderRule {
                id: "acme".into(),
                name: "ACME Mail".into(),
                suffixes: vec!["mail.acme.net".into()],
            },
            ProviderRule {
                id: "google".into(),
                name: "ignored".into(),
                suffixes: vec!["gmail-smtp-in.l.google.com.example".into()],
            },
        ]);
        assert_eq!(p.classify(&host("mx1.mail.acme.net")), "acme");
        assert_eq!(p.display_name("acme"), "ACME Mail");
        assert_eq!(p.display_name("google"), "Google");
        assert_eq!(
            p.classify(&host("gmail-smtp-in.l.google.com.example")),
            "google"
        );
    }
}
