//! What the watchlist refers to outside itself (environment variables and
//! files: the API token, alert and forward secrets, the domains file), read once, in
//! one place, before validation. Validation then does no IO and sees one
//! consistent picture.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::raw::RawConfig;
use super::validate::Ctx;

/// The environment variable the API token may come from.
pub(super) const TOKEN_VAR: &str = "MXWATCH_API_TOKEN";

pub(super) struct Inputs {
    /// The variables named, those that are set.
    env: HashMap<String, String>,
    /// The files named (relative to the watchlist), or why they could not
    /// be read.
    files: HashMap<PathBuf, Result<String, String>>,
}

impl Inputs {
    /// Reads every variable and file `raw` names.
    pub(super) fn gather(raw: &RawConfig, ctx: &Ctx) -> Inputs {
        let mut names = vec![TOKEN_VAR.to_string()];
        let mut paths: Vec<PathBuf> = Vec::new();
        paths.extend(raw.api_token_file.iter().map(|f| ctx.relative(f.clone())));
        paths.extend(raw.domains_file.iter().map(|f| ctx.relative(f.clone())));
        for a in &raw.alerts {
            names.extend(a.secret_env.iter().cloned());
            paths.extend(a.secret_file.iter().map(|f| ctx.relative(f.clone())));
        }
        for f in &raw.forward {
            for n in [&f.password_env, &f.bearer_env, &f.header_value_env] {
                names.extend(n.iter().cloned());
            }
            for p in [&f.password_file, &f.bearer_file, &f.header_value_file] {
                paths.extend(p.iter().map(|f| ctx.relative(f.clone())));
            }
        }
        for u in &raw.undo {
            for n in [
                &u.api_key_env,
                &u.access_key_id_env,
                &u.secret_access_key_env,
            ] {
                names.extend(n.iter().cloned());
            }
            for p in [
                &u.api_key_file,
                &u.access_key_id_file,
                &u.secret_access_key_file,
            ] {
                paths.extend(p.iter().map(|f| ctx.relative(f.clone())));
            }
        }
        for p in &raw.passive_dns {
            names.extend(p.key_env.iter().cloned());
            paths.extend(p.key_file.iter().map(|f| ctx.relative(f.clone())));
        }
        Inputs {
            env: names
                .into_iter()
                .filter_map(|n| std::env::var(&n).ok().map(|v| (n, v)))
                .collect(),
            files: paths
                .into_iter()
                .map(|p| {
                    let text = std::fs::read_to_string(&p).map_err(|e| e.to_string());
                    (p, text)
                })
                .collect(),
        }
    }

    /// A variable's value, if it is set.
    pub(super) fn var(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }

    /// A file's text, or why it could not be read.
    pub(super) fn file(&self, path: &Path) -> Result<&str, String> {
        match self.files.get(path) {
            Some(Ok(text)) => Ok(text),
            Some(Err(e)) => Err(e.clone()),
            None => Err("not read before validation".into()),
        }
    }
}
