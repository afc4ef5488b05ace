//! Where a field is in the YAML text: errors name its line and column.

/// The line and column (1-based) of the field at `path` (`anomaly.window`,
/// `alerts[0].url`, `domains[3]`) in block-style YAML, or of the nearest
/// enclosing field found (a flow-style `{...}` or `[...]` value is located
/// at its key).
pub(super) fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    // Lines that carry content, with the column where it starts.
    let content = |i: usize| -> Option<(usize, &str)> {
        let l = lines[i];
        let t = l.trim_start();
        (!t.is_empty() && !t.starts_with('#')).then(|| (l.len() - t.len(), t))
    };
    let (mut from, mut to, mut parent) = (0usize, lines.len(), None::<usize>);
    let mut found: Option<(usize, usize)> = None;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (key, indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        if !key.is_empty() {
            let hit = (from..to).find_map(|i| {
                let (col, t) = content(i)?;
                // A key may follow a sequence marker: `- name: x`.
                let (col, t) = match t.strip_prefix("- ") {
                    Some(rest) => (
                        col + 2 + (rest.len() - rest.trim_start().len()),
                        rest.trim_start(),
                    ),
                    None => (col, t),
                };
                let bare = t
                    .strip_prefix(key)
                    .is_some_and(|r| r.trim_start().starts_with(':'));
                let quoted = [format!("\"{key}\""), format!("'{key}'")].iter().any(|q| {
                    t.strip_prefix(q.as_str())
                        .is_some_and(|r| r.trim_start().starts_with(':'))
                });
                (parent.is_none_or(|p| col > p) && (bare || quoted)).then_some((i, col))
            });
            let Some(hit) = hit else {
                return found;
            };
            found = Some((hit.0 + 1, hit.1 + 1));
            parent = Some(hit.1);
            from = hit.0 + 1;
            to = (from..to)
                .find(|&i| {
                    content(i)
                        .is_some_and(|(c, t)| c < hit.1 || (c == hit.1 && !t.starts_with("- ")))
                })
                .unwrap_or(to);
        }
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            let Ok(k) = index.parse::<usize>() else {
                return found;
            };
            let items: Vec<(usize, usize)> = (from..to)
                .filter_map(|i| content(i).map(|(c, t)| (i, c, t)))
                .filter(|(_, _, t)| t.starts_with("- ") || *t == "-")
                .map(|(i, c, _)| (i, c))
                .collect();
            let Some(&(_, item_col)) = items.first() else {
                return found; // a flow sequence: its key is as close as we get
            };
            let items: Vec<(usize, usize)> =
                items.into_iter().filter(|(_, c)| *c == item_col).collect();
            let Some(&(line, col)) = items.get(k) else {
                return found;
            };
            found = Some((line + 1, col + 1));
            from = line;
            to = items.get(k + 1).map_or(to, |(next, _)| *next);
            parent = Some(col);
        }
    }
    found
}

/// yaml_serde puts its own path in front of messages and " at line L
/// column C" behind; we print both ourselves, in front.
pub(super) fn strip_location(msg: &str, field: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    match msg.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') && field.starts_with(head) => rest.to_string(),
        _ => msg.to_string(),
    }
}

/// Where `key` is given a second time in the map at `path` (`""`: the
/// top level; `alerts[0]`): the line and column of the second.
pub(super) fn locate_duplicate(text: &str, path: &str, key: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let path = path.trim_start_matches('.');
    let start = match path {
        "" => 0,
        p => locate(text, p)?.0 - 1,
    };
    // Each line's key, and the column it starts at (after a `- `).
    let key_at = |l: &str| -> Option<(usize, bool)> {
        let t = l.trim_start();
        let mut col = l.len() - t.len();
        let t = match t.strip_prefix("- ") {
            Some(rest) => {
                col += 2 + (rest.len() - rest.trim_start().len());
                rest.trim_start()
            }
            None => t,
        };
        let own = t
            .strip_prefix(key)
            .is_some_and(|r| r.trim_start().starts_with(':'));
        Some((col, own)).filter(|_| !t.is_empty() && !t.starts_with('#'))
    };
    let mut map_col = None;
    let mut seen = 0;
    for (i, l) in lines.iter().enumerate().skip(start) {
        let Some((col, own)) = key_at(l) else {
            continue;
        };
        match map_col {
            None if own => map_col = Some(col),
            None if path.is_empty() && col == 0 => {}
            None => {}
            Some(c) if col < c => return None,
            Some(_) => {}
        }
        if own && map_col == Some(col) {
            seen += 1;
            if seen == 2 {
                return Some((i + 1, col + 1));
            }
        }
    }
    None
}

/// The first tab in a line's indentation (YAML indents with spaces only):
/// its line and column.
pub(super) fn indentation_tab(text: &str) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(i, l)| {
        let indent = &l[..l.len() - l.trim_start().len()];
        indent.find('\t').map(|c| (i + 1, c + 1))
    })
}
