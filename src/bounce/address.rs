//! One address grammar for every reader: RFC 5321's `Mailbox` (a
//! dot-string or a quoted string, `@`, a domain), with RFC 6531's UTF-8 in
//! local parts and domains. A log's `to=<…>`, Exim's `** …`, a bounce
//! text's running words and an ESP's field are all read by it, so a
//! quoted local part (`"kim@w1.test x"@attacker.test`) is taken whole
//! everywhere, never as the `kim@w1.test` inside it.
//!
//! Whatever cannot be taken whole gives no address: an unterminated quote,
//! an address glued to other characters, a domain that runs on.

/// ASCII characters of an atom besides letters and digits (RFC 5322 `atext`).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || is_utf8_text(c)
}

/// RFC 6531's `UTF8-non-ascii`, less the invisible and control characters
/// no mail system hands out (they only disguise one address as another).
fn is_utf8_text(c: char) -> bool {
    !c.is_ascii()
        && !c.is_control()
        && !c.is_whitespace()
        && !matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

/// A domain label's letters and digits (`Let-dig`; U-labels allowed).
fn is_let_dig(c: char) -> bool {
    c.is_ascii_alphanumeric() || (!c.is_ascii() && c.is_alphanumeric())
}

fn char_at(s: &str, i: usize) -> Option<char> {
    s.get(i..).and_then(|r| r.chars().next())
}

/// The end of a dot-string (`atom *("." atom)`) starting at `i`.
fn dot_string_end(s: &str, i: usize) -> Option<usize> {
    let mut j = i;
    loop {
        let start = j;
        while let Some(c) = char_at(s, j).filter(|&c| is_atext(c)) {
            j += c.len_utf8();
        }
        if j == start {
            // An empty atom: a leading, doubled or trailing dot.
            return None;
        }
        if char_at(s, j) == Some('.') {
            j += 1;
        } else {
            return Some(j);
        }
    }
}

/// The end (after the closing quote) of a quoted string starting at `i`
/// (`"` *qcontent `"`, with `\` pairs); `None` when it is not closed.
pub fn quoted_end(s: &str, i: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    if bytes.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            b'\r' | b'\n' => return None,
            _ => j += 1,
        }
    }
    None
}

/// The end of a domain starting at `i`: dot-separated labels of letters,
/// digits and inner hyphens, or an address literal `[…]`.
fn domain_end(s: &str, i: usize) -> Option<usize> {
    if char_at(s, i) == Some('[') {
        return s[i..].find(']').map(|k| i + k + 1);
    }
    let mut end = None;
    let mut j = i;
    loop {
        if !char_at(s, j).is_some_and(is_let_dig) {
            return end;
        }
        let mut last_let_dig = j;
        while let Some(c) = char_at(s, j).filter(|&c| is_let_dig(c) || c == '-') {
            if c != '-' {
                last_let_dig = j + c.len_utf8();
            }
            j += c.len_utf8();
        }
        // A label ends on a letter or digit: trailing hyphens are not its.
        if last_let_dig != j {
            return None;
        }
        end = Some(j);
        if char_at(s, j) == Some('.') && char_at(s, j + 1).is_some_and(is_let_dig) {
            j += 1;
        } else {
            return end;
        }
    }
}

/// The end of a mailbox (`local-part "@" domain`) starting at `i`.
pub fn mailbox_end(s: &str, i: usize) -> Option<usize> {
    let at = if char_at(s, i) == Some('"') {
        quoted_end(s, i)?
    } else {
        dot_string_end(s, i)?
    };
    if char_at(s, at) != Some('@') {
        return None;
    }
    domain_end(s, at + 1)
}

/// Whether `s` is one mailbox, whole.
pub fn is_mailbox(s: &str) -> bool {
    mailbox_end(s, 0) == Some(s.len())
}

/// Characters that may close an address in running text or a log field.
fn ends_address(s: &str, k: usize) -> bool {
    match char_at(s, k) {
        None => true,
        Some(c) if c.is_whitespace() => true,
        Some('>' | ')' | ']' | ',' | ';' | ':' | '\'') => true,
        // A sentence's full stop.
        Some('.') => char_at(s, k + 1).is_none_or(char::is_whitespace),
        _ => false,
    }
}

/// Characters after which an address may start in running text.
fn opens_address(c: char) -> bool {
    c.is_whitespace() || matches!(c, '<' | '(' | '[' | ':' | ';' | ',' | '=' | '\'')
}

/// The address a log field holds, whole: `<mailbox>` or a bare mailbox
/// followed by a space, a comma, a colon or the end (Postfix's and
/// Sendmail's `to=`, Exim's `** address`). `None` when the field does not
/// start with one whole address.
pub fn leading(s: &str) -> Option<&str> {
    if let Some(inner) = s.strip_prefix('<') {
        let k = mailbox_end(inner, 0)?;
        return (inner[k..].starts_with('>') && ends_address(inner, k + 1)).then(|| &inner[..k]);
    }
    let k = mailbox_end(s, 0)?;
    (ends_address(s, k) && !s[k..].starts_with(['>', ')', ']', '\''])).then(|| &s[..k])
}

/// Every whole address in a line of running text, with where it starts.
/// A quoted string is read as one: an address followed by it (`"a b"@x`)
/// is taken with it, one it encloses exactly (`"kim@w1.test"`) is taken as
/// a person quotes it, and anything else inside it is not an address. After
/// a quote that does not close, nothing is taken.
pub fn in_text(s: &str) -> impl Iterator<Item = (usize, &str)> {
    // Most lines of a bounce name no address: one fast search says so.
    let mut i = if s.contains('@') { 0 } else { s.len() };
    std::iter::from_fn(move || {
        while let Some(c) = char_at(s, i) {
            let opened = s[..i].chars().next_back().is_none_or(opens_address);
            if c == '"' {
                let j = quoted_end(s, i)?;
                if opened && s[j..].starts_with('@') {
                    if let Some(k) = domain_end(s, j + 1).filter(|&k| ends_address(s, k)) {
                        let at = i;
                        i = k;
                        return Some((at, &s[at..k]));
                    }
                } else if opened && is_mailbox(&s[i + 1..j - 1]) && ends_address(s, j) {
                    let at = i + 1;
                    i = j;
                    return Some((at, &s[at..j - 1]));
                }
                i = j;
                continue;
            }
            if opened && (is_atext(c) || c == '.') {
                // `'kim@w1.test'`: a person's quotes, when they close.
                if c == '\''
                    && let Some(k) = mailbox_end(s, i + 1)
                    && s[k..].starts_with('\'')
                {
                    let at = i + 1;
                    i = k + 1;
                    return Some((at, &s[at..k]));
                }
                if let Some(k) = mailbox_end(s, i).filter(|&k| ends_address(s, k)) {
                    let at = i;
                    i = k;
                    return Some((at, &s[at..k]));
                }
                // Not an address: pass the whole word (up to a quote,
                // which is read as one).
                i += c.len_utf8();
                while let Some(c) = char_at(s, i).filter(|&c| c != '"' && !opens_address(c)) {
                    i += c.len_utf8();
                }
                continue;
            }
            i += c.len_utf8();
        }
        None
    })
}

/// Lower-cases and checks an address: `local@domain` with a dotted domain,
/// whole by [`is_mailbox`]. Angle brackets, `mailto:` and quotes around the
/// whole address (`'a@b.example'`, `"a@b.example"`) are a writer's, not
/// the address's, and go.
pub fn normalise_address(raw: &str) -> Option<(String, String)> {
    let s = raw.trim().trim_end_matches([',', ';', ':']).trim();
    let s = s
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(s)
        .trim();
    let s = s.strip_prefix("mailto:").unwrap_or(s);
    let s = ['\'', '"']
        .iter()
        .find_map(|&q| {
            s.strip_prefix(q)
                .and_then(|r| r.strip_suffix(q))
                .filter(|r| is_mailbox(r))
        })
        .unwrap_or(s);
    if !is_mailbox(s) {
        return None;
    }
    let (local, domain) = s.rsplit_once('@')?;
    if local.len() > 64 || domain.starts_with('[') || !domain.contains('.') {
        return None;
    }
    let domain = crate::domain::DomainName::parse(domain)
        .ok()?
        .as_str()
        .to_string();
    // ASCII case only: a Unicode lower-casing turns one address into
    // another (KELVIN SIGN `\u{212A}im@` into `kim@`). The domain was
    // mapped by its own rules (UTS #46) above.
    Some((format!("{}@{domain}", local.to_ascii_lowercase()), domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(s: &str) -> Vec<&str> {
        in_text(s).map(|(_, a)| a).collect()
    }

    #[test]
    fn mailboxes_are_read_by_the_grammar() {
        for ok in [
            "kim@w1.test",
            "a.b+c@x.example",
            "\"kim@w1.test x\"@attacker.test",
            "\"a\\\"b\"@x.example",
            "jörg@bücher.example",
            "a@[192.0.2.1]",
        ] {
            assert!(is_mailbox(ok), "{ok}");
        }
        for bad in [
            "\"kim@w1.test",
            "kim@w1.test x",
            ".kim@w1.test",
            "kim.@w1.test",
            "k..im@w1.test",
            "kim@-w1.test",
            "kim@w1-.test",
            "kim\u{200B}@w1.test",
            "kim@",
            "@w1.test",
        ] {
            assert!(!is_mailbox(bad), "{bad}");
        }
    }

    #[test]
    fn running_text_gives_only_whole_addresses() {
        assert_eq!(
            found("<\"kim@w1.test x\"@attacker.test>: 550 5.1.1 user unknown"),
            ["\"kim@w1.test x\"@attacker.test"]
        );
        assert_eq!(
            found("\"kim@w2.test,\"@attacker.test"),
            ["\"kim@w2.test,\"@attacker.test"]
        );
        assert_eq!(
            found("\"kim@w3.test>\"@attacker.test"),
            ["\"kim@w3.test>\"@attacker.test"]
        );
        assert_eq!(found("x\"kim@w1.test\"@attacker.test"), Vec::<&str>::new());
        assert_eq!(found("\"kim@w1.test x"), Vec::<&str>::new());
        assert_eq!(found("to \"kim@w1.test x\" and more"), Vec::<&str>::new());
        assert_eq!(
            found("The address \"kim@w1.test\" was refused."),
            ["kim@w1.test"]
        );
        assert_eq!(found("'kim@w1.test' unknown"), ["kim@w1.test"]);
        assert_eq!(found("'kim@w1.test unknown"), ["'kim@w1.test"]);
        assert_eq!(
            found("<a@x.example> <b@y.example>, c@z.example."),
            ["a@x.example", "b@y.example", "c@z.example"]
        );
        assert_eq!(found("ab+c\u{200b}.d@x.example"), Vec::<&str>::new());
        assert_eq!(
            found("kim@w1.test- kim@w1.test_x kim@w1.test\"x"),
            Vec::<&str>::new()
        );
        assert_eq!(found("mailto:kim@w1.test"), ["kim@w1.test"]);
        assert_eq!(found("it's '' ' x'y kim@w1.test"), ["kim@w1.test"]);
    }

    #[test]
    fn a_log_field_is_one_address_or_none() {
        assert_eq!(leading("<kim@w1.test>, relay=x"), Some("kim@w1.test"));
        assert_eq!(leading("kim@w1.test, relay=x"), Some("kim@w1.test"));
        assert_eq!(leading("kim@w1.test: 550"), Some("kim@w1.test"));
        assert_eq!(
            leading("<\"kim@w1.test x\"@attacker.test>, relay"),
            Some("\"kim@w1.test x\"@attacker.test")
        );
        assert_eq!(
            leading("\"kim@w1.test x\"@attacker.test R=x"),
            Some("\"kim@w1.test x\"@attacker.test")
        );
        assert_eq!(leading("<\"kim@w1.test x>, relay"), None);
        assert_eq!(leading("\"kim@w1.test x\" R=x"), None);
        assert_eq!(leading("<kim@w1.test"), None);
        assert_eq!(leading("<root>"), None);
    }

    #[test]
    fn addresses_normalise() {
        assert_eq!(
            normalise_address("<User.Name@Example.COM>"),
            Some(("user.name@example.com".into(), "example.com".into()))
        );
        assert_eq!(normalise_address("rfc822"), None);
        assert_eq!(normalise_address("a@localhost"), None);
        assert_eq!(normalise_address("a b@example.com"), None);
        assert_eq!(normalise_address("a@[192.0.2.1]"), None);
        assert_eq!(
            normalise_address("<\"neko..nyaan\"@Example.org>").map(|a| a.0),
            Some("\"neko..nyaan\"@example.org".into())
        );
        assert_eq!(
            normalise_address("'user@example.org'").map(|a| a.0),
            Some("user@example.org".into())
        );
        // A stray quote is not the writer's: the address is not whole.
        assert_eq!(normalise_address("\"kim@w1.test"), None);
        assert_eq!(normalise_address("kim@w1.test\""), None);
        assert_eq!(normalise_address("\"@attacker.test"), None);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the text, the scan ends, and every address it gives is
        /// a whole mailbox standing where it says, in order.
        #[test]
        fn every_found_address_is_whole(s in r#"([a-z@."<> ,:;'\\\[\]()=]|kim@w1\.test|"x y"|ü){0,40}"#) {
            let mut last = 0;
            for (at, a) in in_text(&s) {
                prop_assert!(is_mailbox(a), "{a:?} in {s:?}");
                prop_assert_eq!(&s[at..at + a.len()], a);
                prop_assert!(at >= last);
                last = at + a.len();
            }
            if let Some(a) = leading(&s) {
                prop_assert!(is_mailbox(a));
            }
        }
    }
}
