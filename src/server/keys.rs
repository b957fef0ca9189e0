//! Where write keys and admin tokens come from: the keys file (`--keys-file`, re-read on
//! SIGHUP), the environment (`PROFILEDB_WRITE_KEYS`, `PROFILEDB_ADMIN_TOKENS`) and, still
//! accepted but not recommended, `--write-key` / `--admin-token` on the command line.
//!
//! Keys file, one credential a line (`#` starts a comment, blank lines are skipped):
//!
//! ```text
//! write  wk_live_shop            shop     # public write key of project shop: ingest only
//! admin  6f1c...a secret...      shop     # admin token of project shop
//! admin  0b9e...another secret   *        # server-wide admin token (every project, /metrics)
//! ```
//!
//! The environment variables hold comma-separated `CREDENTIAL=PROJECT` pairs (`*` for a
//! server-wide admin token).

use std::path::Path;

use super::ServerError;

/// Environment variable of write keys: `KEY=PROJECT,KEY=PROJECT`.
pub const ENV_WRITE_KEYS: &str = "PROFILEDB_WRITE_KEYS";
/// Environment variable of admin tokens: `TOKEN=PROJECT,TOKEN=*`.
pub const ENV_ADMIN_TOKENS: &str = "PROFILEDB_ADMIN_TOKENS";

/// Shortest admin token accepted (they are secrets: long random strings).
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Which projects an admin token reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminScope {
    /// One project.
    Project(String),
    /// Every project, plus `/metrics` and the detailed `/health`.
    Server,
}

/// Write keys and admin tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    /// `(write key, project)`.
    pub write_keys: Vec<(String, String)>,
    /// `(admin token, scope)`.
    pub admin_tokens: Vec<(String, AdminScope)>,
}

impl KeySet {
    /// Add everything of `other`.
    pub fn extend(&mut self, other: KeySet) {
        self.write_keys.extend(other.write_keys);
        self.admin_tokens.extend(other.admin_tokens);
    }
}

fn scope(project: &str) -> AdminScope {
    if project == "*" {
        AdminScope::Server
    } else {
        AdminScope::Project(project.to_string())
    }
}

/// Parse a keys file's text; `origin` names it in errors (never echoing a secret).
pub(crate) fn parse_keys_file(text: &str, origin: &str) -> Result<KeySet, ServerError> {
    let mut set = KeySet::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["write", key, project] => set.write_keys.push((key.to_string(), project.to_string())),
            ["admin", token, project] => set.admin_tokens.push((token.to_string(), scope(project))),
            _ => {
                return Err(ServerError::Config(format!(
                    "{origin} line {}: expected `write KEY PROJECT` or `admin TOKEN PROJECT|*`",
                    n + 1
                )));
            }
        }
    }
    Ok(set)
}

/// Read and parse a keys file.
pub(crate) fn read_keys_file(path: &Path) -> Result<KeySet, ServerError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ServerError::Config(format!("cannot read the keys file {}: {e}", path.display()))
    })?;
    parse_keys_file(&text, &format!("keys file {}", path.display()))
}

/// `A=B,C=D` pairs, split at the last `=` of each.
fn pairs(value: &str, name: &str) -> Result<Vec<(String, String)>, ServerError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .enumerate()
        .map(|(i, p)| {
            p.rsplit_once('=')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    ServerError::Config(format!(
                        "{name}: entry {} is not CREDENTIAL=PROJECT",
                        i + 1
                    ))
                })
        })
        .collect()
}

/// Credentials from `PROFILEDB_WRITE_KEYS` and `PROFILEDB_ADMIN_TOKENS` (absent = none).
pub fn from_env() -> Result<KeySet, ServerError> {
    let mut set = KeySet::default();
    if let Ok(v) = std::env::var(ENV_WRITE_KEYS) {
        set.write_keys = pairs(&v, ENV_WRITE_KEYS)?;
    }
    if let Ok(v) = std::env::var(ENV_ADMIN_TOKENS) {
        set.admin_tokens = pairs(&v, ENV_ADMIN_TOKENS)?
            .into_iter()
            .map(|(t, p)| (t, scope(&p)))
            .collect();
    }
    Ok(set)
}

/// `KEY=PROJECT` of a command-line flag.
pub fn parse_pair(spec: &str, flag: &str) -> Result<(String, String), ServerError> {
    spec.rsplit_once('=')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| ServerError::Config(format!("{flag}: expected CREDENTIAL=PROJECT")))
}

/// Check a key set: write keys well-formed and unambiguous, admin tokens long enough, no
/// credential both a write key and an admin token. Errors never include a secret.
pub(crate) fn validate(set: &KeySet) -> Result<(), ServerError> {
    let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for (i, (key, project)) in set.write_keys.iter().enumerate() {
        if key.is_empty()
            || key.contains(':')
            || key.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ServerError::Config(format!(
                "write key #{} (project {project:?}): must be non-empty, without ':', spaces or \
                 control characters (it is sent as the HTTP basic-auth user)",
                i + 1
            )));
        }
        super::validate_project_name(project)?;
        if let Some(other) = seen.insert(key, project)
            && other != project
        {
            return Err(ServerError::Config(format!(
                "write key #{} is given for two projects ({other:?} and {project:?})",
                i + 1
            )));
        }
    }
    for (i, (token, scope)) in set.admin_tokens.iter().enumerate() {
        if token.len() < MIN_ADMIN_TOKEN_LEN
            || token.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ServerError::Config(format!(
                "admin token #{}: use at least {MIN_ADMIN_TOKEN_LEN} characters without spaces \
                 (a long random secret)",
                i + 1
            )));
        }
        if let AdminScope::Project(p) = scope {
            super::validate_project_name(p)?;
        }
        if seen.contains_key(token.as_str()) {
            return Err(ServerError::Config(format!(
                "admin token #{} is also a write key: write keys are public, admin tokens secret",
                i + 1
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_keys_file() {
        let set = parse_keys_file(
            "# c\nwrite wk shop\n\nadmin 0123456789abcdef shop # x\nadmin fedcba9876543210fe *\n",
            "f",
        )
        .unwrap();
        assert_eq!(set.write_keys, vec![("wk".into(), "shop".into())]);
        assert_eq!(set.admin_tokens[0].1, AdminScope::Project("shop".into()));
        assert_eq!(set.admin_tokens[1].1, AdminScope::Server);
        validate(&set).unwrap();
        let err = parse_keys_file("write only-two\n", "f").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        let short = parse_keys_file("admin short shop\n", "f").unwrap();
        assert!(validate(&short).is_err());
    }
}
