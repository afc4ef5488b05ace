//! The `key=value, key=value, …` fields of a Postfix or Sendmail delivery
//! line. Address values (`to=<…>`, `orig_to=<…>`, `ctladdr=<…>`) are read
//! by the address grammar, so the commas, `>` and `status=` inside a
//! quoted local part (`to=<"kim@w1.test, status=sent"@attacker.test>`)
//! stay in the address and are never taken for fields.

use crate::bounce::address;

/// One line's fields, in order.
#[derive(Debug, Default)]
pub struct Fields<'a> {
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Fields<'a> {
    /// Reads `rest`; the field named `last` (`status`, `stat`) takes the
    /// rest of the line, whatever it holds. An address value that is not
    /// one whole address is an error: the line names no recipient we can
    /// take whole.
    pub fn read(rest: &'a str, last: &str) -> Result<Fields<'a>, String> {
        let mut fields = Vec::new();
        let mut i = 0;
        while i < rest.len() {
            let s = &rest[i..];
            let key_len = s
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            let (key, after) = (&s[..key_len], &s[key_len..]);
            let Some(value_part) = after.strip_prefix('=').filter(|_| key_len > 0) else {
                // Not a field (a `(1000/1000)` after ctladdr, free words):
                // passed to the next field.
                i += s.find(", ").map_or(s.len(), |k| k + 2);
                continue;
            };
            let v = i + key_len + 1;
            if key == last {
                fields.push((key, &rest[v..]));
                break;
            }
            let value_end = v + address_len(value_part)
                .map_err(|()| format!("{key}= holds no whole address: {}", excerpt(value_part)))?;
            let end = rest[value_end..]
                .find(", ")
                .map_or(rest.len(), |k| value_end + k);
            fields.push((key, &rest[v..end]));
            i = (end + 2).min(rest.len());
        }
        Ok(Fields { fields })
    }

    /// The first field named `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The recipient a `to=` value names, whole: `<address>` or the first
    /// of a bare list (Sendmail's `to=a@x,b@y`); empty when it names none
    /// we can take (`to=<root>`, a pipe), which the caller reports.
    pub fn recipient(&self) -> Option<String> {
        let to = self.get("to")?;
        Some(address::leading(to).unwrap_or_default().to_string())
    }
}

/// How much of a value an address at its start takes: `<>`, `<mailbox>`,
/// a bare mailbox, or nothing when the value does not start with one.
/// `Err` when it opens an address (`<`, `"`) that does not close whole.
fn address_len(value: &str) -> Result<usize, ()> {
    if value.starts_with("<>") {
        return Ok(2);
    }
    if value.starts_with('<') {
        return match address::mailbox_end(value, 1) {
            Some(k) if value[k..].starts_with('>') => Ok(k + 1),
            // `<root>`, `<|/usr/bin/procmail>`: no address, no quote.
            _ if !value.contains('"') => Ok(value.find('>').map_or(0, |k| k + 1)),
            _ => Err(()),
        };
    }
    match address::mailbox_end(value, 0) {
        Some(k) => Ok(k),
        None if value.starts_with('"') => Err(()),
        None => Ok(0),
    }
}

/// The start of a hostile value, for an error message.
fn excerpt(s: &str) -> String {
    let cut: String = s.chars().take(60).collect();
    if cut.len() < s.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_around_quoted_addresses() {
        let f = Fields::read(
            "to=<\"kim@w1.test, status=sent (ok)\"@attacker.test>, relay=mx.attacker.test[192.0.2.1]:25, dsn=5.1.1, status=bounced (host x said: 550 5.1.1, no)",
            "status",
        )
        .unwrap();
        assert_eq!(
            f.recipient().as_deref(),
            Some("\"kim@w1.test, status=sent (ok)\"@attacker.test")
        );
        assert_eq!(
            f.get("status"),
            Some("bounced (host x said: 550 5.1.1, no)")
        );
        assert_eq!(f.get("relay"), Some("mx.attacker.test[192.0.2.1]:25"));
        assert_eq!(f.get("dsn"), Some("5.1.1"));
    }

    #[test]
    fn an_address_that_is_not_whole_is_refused_or_empty() {
        assert!(Fields::read("to=<\"kim@w1.test x>, status=bounced", "status").is_err());
        assert!(Fields::read("to=\"kim@w1.test x, stat=User unknown", "stat").is_err());
        let f = Fields::read("to=<root>, relay=local, status=bounced", "status").unwrap();
        assert_eq!(f.recipient().as_deref(), Some(""));
        let f = Fields::read(
            "to=a@x.example,b@y.example, ctladdr=<me@x.example> (1000/1000), stat=Sent",
            "stat",
        )
        .unwrap();
        assert_eq!(f.recipient().as_deref(), Some("a@x.example"));
        assert_eq!(f.get("stat"), Some("Sent"));
        let f = Fields::read("from=<>, status=expired, returned to sender", "status").unwrap();
        assert_eq!(f.recipient(), None);
    }
}
