//! `[keys]`: what a key must be to be added.

use super::located::{ConfigError, Located};
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    min_rsa_bits: Option<Spanned<i64>>,
    allowed_types: Option<Spanned<Vec<String>>>,
    max_per_user: Option<Spanned<i64>>,
    max_lifetime: Option<Spanned<String>>,
    banned: Option<Spanned<String>>,
}

/// Key families an operator can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Ed25519,
    Ecdsa,
    Rsa,
    SkEd25519,
    SkEcdsa,
}

impl KeyFamily {
    pub const ALL: [KeyFamily; 5] =
        [KeyFamily::Ed25519, KeyFamily::Ecdsa, KeyFamily::Rsa, KeyFamily::SkEd25519, KeyFamily::SkEcdsa];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyFamily::Ed25519 => "ed25519",
            KeyFamily::Ecdsa => "ecdsa",
            KeyFamily::Rsa => "rsa",
            KeyFamily::SkEd25519 => "sk-ed25519",
            KeyFamily::SkEcdsa => "sk-ecdsa",
        }
    }
}

#[derive(Debug, Clone)]
pub struct KeysConfig {
    pub min_rsa_bits: u32,
    pub allowed_types: Vec<KeyFamily>,
    pub max_per_user: u32,
    /// The longest a key may live; also the expiry of keys added without one.
    pub max_lifetime: Option<std::time::Duration>,
    /// A file of banned keys (fingerprints or key lines), checked when a key is added.
    pub banned: Option<PathBuf>,
}

impl Default for KeysConfig {
    fn default() -> KeysConfig {
        KeysConfig {
            min_rsa_bits: 3072,
            allowed_types: KeyFamily::ALL.to_vec(),
            max_per_user: 100,
            max_lifetime: None,
            banned: None,
        }
    }
}

pub(super) fn parse(at: &Located<'_>, raw: Raw, k: &mut KeysConfig) -> Result<(), ConfigError> {
    if let Some(bits) = at.int(raw.min_rsa_bits, "keys.min_rsa_bits", 2048..=16384)? {
        k.min_rsa_bits = bits;
    }
    if let Some(types) = raw.allowed_types {
        let span = types.span();
        let mut families = Vec::new();
        for name in types.into_inner() {
            match KeyFamily::ALL.into_iter().find(|f| f.as_str() == name) {
                Some(f) if !families.contains(&f) => families.push(f),
                Some(_) => {}
                None => {
                    return at.error(
                        &span,
                        "keys.allowed_types",
                        format!(
                            "`{}` is not a key type (ed25519, ecdsa, rsa, sk-ed25519, sk-ecdsa)",
                            name.escape_debug()
                        ),
                    )
                }
            }
        }
        if families.is_empty() {
            return at.error(&span, "keys.allowed_types", "must allow at least one key type");
        }
        k.allowed_types = families;
    }
    if let Some(max) = at.int(raw.max_per_user, "keys.max_per_user", 1..=10_000)? {
        k.max_per_user = max;
    }
    if let Some(p) = at.path(raw.banned, "keys.banned")? {
        k.banned = Some(p);
    }
    if let Some(life) = at.duration(raw.max_lifetime, "keys.max_lifetime")? {
        k.max_lifetime = Some(life);
    }
    Ok(())
}
