//! Where bounce inputs come from: files, Maildir folders (and any folder of
//! files), `-` for standard input. Expands paths; reads nothing twice.

use std::path::{Path, PathBuf};

/// One input to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    File(PathBuf),
    Stdin,
}

impl Input {
    pub fn name(&self) -> String {
        match self {
            Input::File(p) => p.display().to_string(),
            Input::Stdin => "-".into(),
        }
    }

    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        match self {
            Input::File(p) => std::fs::read(p),
            Input::Stdin => {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
                Ok(buf)
            }
        }
    }

    /// Size in bytes, for progress (0 when unknown).
    pub fn size(&self) -> u64 {
        match self {
            Input::File(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            Input::Stdin => 0,
        }
    }
}

/// Expands the paths a user gave: a folder becomes its files (a Maildir's
/// `cur` and `new`, or every file below it, in name order; dot files and
/// Maildir's `tmp` are left out). A path that does not exist is an error
/// for that path alone.
pub fn expand(paths: &[PathBuf]) -> (Vec<Input>, Vec<(String, String)>) {
    let mut inputs = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            inputs.push(Input::Stdin);
        } else if p.is_dir() {
            let mut files = Vec::new();
            walk(p, &mut files, &mut errors);
            files.sort();
            inputs.extend(files.into_iter().map(Input::File));
        } else if p.exists() {
            inputs.push(Input::File(p.clone()));
        } else {
            errors.push((p.display().to_string(), "no such file or folder".into()));
        }
    }
    (inputs, errors)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<(String, String)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push((dir.display().to_string(), e.to_string()));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "tmp" {
            continue;
        }
        if path.is_dir() {
            walk(&path, out, errors);
        } else {
            out.push(path);
        }
    }
}
