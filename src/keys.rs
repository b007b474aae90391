//! Public key text as users paste it: validated, canonicalised and fingerprinted with the
//! ssh-key crate. Every refusal is one line that says why, and never echoes a private key.

use crate::config::{Config, KeyFamily};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, PublicKey};
use std::fmt;

/// Longest key line accepted (a 16384-bit RSA key is about 2.8 KB of text).
pub const MAX_KEY_TEXT: usize = 16 * 1024;
/// Longest comment kept.
pub const MAX_COMMENT: usize = 256;

/// A public key that passed every check, in the canonical form we store and print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidKey {
    /// The key type as OpenSSH names it, e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// Canonical base64 of the key blob.
    pub blob: String,
    /// `SHA256:…`, exactly as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// The comment, free of control characters, at most [`MAX_COMMENT`] characters.
    pub comment: String,
    /// Key size in bits, as `ssh-keygen -lf` reports it.
    pub bits: u32,
}

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Empty,
    TooLong(usize),
    PrivateKey,
    Rfc4716,
    ControlCharacter { code: u32, column: usize },
    Options,
    UnknownType(String),
    Dsa,
    Certificate,
    TypeNotAllowed(String),
    MissingBlob,
    BadBase64,
    NotCanonical,
    TypeMismatch,
    RsaTooShort { bits: u32, min: u32 },
    SeveralKeys,
    CommentTooLong,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => write!(f, "no key given"),
            KeyError::TooLong(n) => write!(f, "key text is {n} bytes, longer than {MAX_KEY_TEXT}"),
            KeyError::PrivateKey => {
                write!(f, "this is a PRIVATE key: it was not stored; keep it secret and upload the matching .pub file")
            }
            KeyError::Rfc4716 => {
                write!(f, "RFC 4716 (SSH2) format is not accepted; convert it with `ssh-keygen -i -f FILE`")
            }
            KeyError::ControlCharacter { code, column } => {
                write!(f, "control character U+{code:04X} at column {column}; a key is one line of printable text")
            }
            KeyError::Options => {
                write!(f, "authorized_keys options are not accepted; give only the key type, the key and a comment")
            }
            KeyError::UnknownType(t) => write!(f, "unknown key type `{t}`"),
            KeyError::Dsa => write!(f, "DSA keys are refused (insecure; OpenSSH no longer accepts them)"),
            KeyError::Certificate => write!(f, "certificates are refused; upload the plain public key"),
            KeyError::TypeNotAllowed(t) => write!(f, "key type {t} is not allowed on this server"),
            KeyError::MissingBlob => write!(f, "the key data is missing after the key type"),
            KeyError::BadBase64 => write!(f, "the key data is not a valid public key in base64"),
            KeyError::NotCanonical => write!(f, "the key data is not in canonical base64"),
            KeyError::TypeMismatch => write!(f, "the key type does not match the key data"),
            KeyError::RsaTooShort { bits, min } => {
                write!(f, "RSA key has {bits} bits; at least {min} are required")
            }
            KeyError::SeveralKeys => write!(f, "more than one key given; add one key at a time"),
            KeyError::CommentTooLong => write!(f, "comment is longer than {MAX_COMMENT} characters"),
        }
    }
}

impl std::error::Error for KeyError {}

const KEY_TYPES: [&str; 7] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

fn is_certificate_type(t: &str) -> bool {
    t.ends_with("-cert-v01@openssh.com") || t.ends_with("-cert-v00@openssh.com")
}

fn looks_like_key_type(t: &str) -> bool {
    KEY_TYPES.contains(&t) || t == "ssh-dss" || is_certificate_type(t)
}

// authorized_keys option names, so that "restrict ssh-ed25519 AAAA…" reads as options.
const OPTION_WORDS: [&str; 11] = [
    "restrict",
    "cert-authority",
    "no-agent-forwarding",
    "no-port-forwarding",
    "no-pty",
    "no-user-rc",
    "no-x11-forwarding",
    "agent-forwarding",
    "port-forwarding",
    "pty",
    "no-touch-required",
];

fn family(key: &KeyData) -> Option<KeyFamily> {
    match key.algorithm() {
        Algorithm::Ed25519 => Some(KeyFamily::Ed25519),
        Algorithm::Ecdsa { .. } => Some(KeyFamily::Ecdsa),
        Algorithm::Rsa { .. } => Some(KeyFamily::Rsa),
        Algorithm::SkEd25519 => Some(KeyFamily::SkEd25519),
        Algorithm::SkEcdsaSha2NistP256 => Some(KeyFamily::SkEcdsa),
        _ => None,
    }
}

fn key_bits(key: &KeyData) -> u32 {
    match key {
        KeyData::Rsa(rsa) => {
            let n = rsa.n.as_positive_bytes().unwrap_or(&[]);
            let n = match n.iter().position(|&b| b != 0) {
                Some(i) => &n[i..],
                None => &[],
            };
            match n.first() {
                Some(first) => (n.len() as u32) * 8 - first.leading_zeros(),
                None => 0,
            }
        }
        KeyData::Ecdsa(ec) => match ec.curve() {
            EcdsaCurve::NistP256 => 256,
            EcdsaCurve::NistP384 => 384,
            EcdsaCurve::NistP521 => 521,
        },
        KeyData::SkEcdsaSha2NistP256(_) => 256,
        _ => 256,
    }
}

/// Validates one public key line (`type base64 [comment]`). A single trailing newline is
/// the caller's to strip; anything else that is not printable is refused.
pub fn parse_public_key(text: &str, config: &Config) -> Result<ValidKey, KeyError> {
    if text.len() > MAX_KEY_TEXT {
        return Err(if text.contains("PRIVATE KEY") { KeyError::PrivateKey } else { KeyError::TooLong(text.len()) });
    }
    // A private key must be caught before any message could quote it.
    if text.contains("PRIVATE KEY") || text.contains("PuTTY-User-Key-File") {
        return Err(KeyError::PrivateKey);
    }
    if text.contains("BEGIN SSH2 PUBLIC KEY") {
        return Err(KeyError::Rfc4716);
    }
    if let Some((column, c)) = text.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(KeyError::ControlCharacter { code: c as u32, column: column + 1 });
    }
    let text = text.trim_matches(' ');
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    let (key_type, rest) = text.split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim_start_matches(' ');
    let (blob, comment) = rest.split_once(' ').unwrap_or((rest, ""));
    let comment = comment.trim_matches(' ');

    if !looks_like_key_type(key_type) {
        let word = key_type.split(['=', ',']).next().unwrap_or("");
        if key_type.contains(['=', ',', '"']) || OPTION_WORDS.contains(&word) {
            return Err(KeyError::Options);
        }
        let shown: String = key_type.chars().take(40).collect();
        return Err(KeyError::UnknownType(shown.escape_debug().to_string()));
    }
    if key_type == "ssh-dss" {
        return Err(KeyError::Dsa);
    }
    if is_certificate_type(key_type) {
        return Err(KeyError::Certificate);
    }
    if blob.is_empty() {
        return Err(KeyError::MissingBlob);
    }
    if comment.split(' ').any(|word| looks_like_key_type(word) || (word.starts_with("AAAA") && word.len() >= 40)) {
        return Err(KeyError::SeveralKeys);
    }
    if comment.chars().count() > MAX_COMMENT {
        return Err(KeyError::CommentTooLong);
    }

    let parsed = match PublicKey::from_openssh(&format!("{key_type} {blob}")) {
        Ok(key) => key,
        Err(ssh_key::Error::AlgorithmUnknown) => return Err(KeyError::TypeMismatch),
        Err(_) => return Err(KeyError::BadBase64),
    };
    let key_data = parsed.key_data();
    if key_data.algorithm().as_str() != key_type {
        return Err(KeyError::TypeMismatch);
    }
    let canonical = parsed.to_openssh().map_err(|_| KeyError::BadBase64)?;
    let canonical_blob = canonical.split(' ').nth(1).unwrap_or("");
    if canonical_blob != blob {
        return Err(KeyError::NotCanonical);
    }
    let Some(family) = family(key_data) else {
        return Err(KeyError::UnknownType(key_type.to_string()));
    };
    if !config.allowed_types.contains(&family) {
        return Err(KeyError::TypeNotAllowed(key_type.to_string()));
    }
    let bits = key_bits(key_data);
    if family == KeyFamily::Rsa && bits < config.min_rsa_bits {
        return Err(KeyError::RsaTooShort { bits, min: config.min_rsa_bits });
    }
    Ok(ValidKey {
        algorithm: key_type.to_string(),
        blob: canonical_blob.to_string(),
        fingerprint: key_data.fingerprint(HashAlg::Sha256).to_string(),
        comment: comment.to_string(),
        bits,
    })
}

/// Whether `fingerprint` is listed in a banned-keys file: one SHA256 fingerprint or one
/// public key line per line, `#` starting a comment. Lines that are neither are ignored.
pub fn is_banned(list: &str, fingerprint: &str) -> bool {
    // `*` alone bans every key (what an unreadable list means).
    if list.trim() == "*" {
        return true;
    }
    list.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()).any(|entry| {
        if is_fingerprint(entry) {
            entry == fingerprint
        } else {
            PublicKey::from_openssh(entry)
                .map(|k| k.key_data().fingerprint(HashAlg::Sha256).to_string() == fingerprint)
                .unwrap_or(false)
        }
    })
}

/// Checks that `text` looks like a SHA256 fingerprint as ssh-keygen prints it, so it can be
/// used in a forced command and a query without further quoting.
pub fn is_fingerprint(text: &str) -> bool {
    text.strip_prefix("SHA256:")
        .is_some_and(|b64| b64.len() == 43 && b64.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with ssh-keygen; fingerprints from `ssh-keygen -lf`.
    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti foo@bar.com";

    fn cfg() -> Config {
        Config::default()
    }

    #[test]
    fn accepts_and_canonicalises_ed25519() {
        let key = parse_public_key(ED25519, &cfg()).unwrap();
        assert_eq!(key.algorithm, "ssh-ed25519");
        assert_eq!(key.comment, "foo@bar.com");
        assert!(is_fingerprint(&key.fingerprint), "{}", key.fingerprint);
        assert_eq!(key.fingerprint, "SHA256:UCUiLr7Pjs9wFFJMDByLgc3NrtdU344OgUM45wZPcIQ");
        let spaced = ED25519.replace(" foo@bar.com", "   my   laptop  ").replace(" AAAA", "  AAAA");
        let key2 = parse_public_key(&spaced, &cfg()).unwrap();
        assert_eq!(key2.fingerprint, key.fingerprint);
        assert_eq!(key2.comment, "my   laptop");
    }

    #[test]
    fn refusals() {
        let c = cfg();
        let blob = ED25519.split(' ').nth(1).unwrap();
        let cases: Vec<(String, KeyError)> = vec![
            (String::new(), KeyError::Empty),
            (format!("{ED25519}\n"), KeyError::ControlCharacter { code: 10, column: ED25519.len() + 1 }),
            (ED25519.replace(' ', "\t"), KeyError::ControlCharacter { code: 9, column: 12 }),
            (format!("{ED25519}\0"), KeyError::ControlCharacter { code: 0, column: ED25519.len() + 1 }),
            (format!("{ED25519}\r"), KeyError::ControlCharacter { code: 13, column: ED25519.len() + 1 }),
            (format!("restrict {ED25519}"), KeyError::Options),
            (format!("command=\"sh\" {ED25519}"), KeyError::Options),
            (format!("ssh-dss {blob}"), KeyError::Dsa),
            (format!("ssh-ed25519-cert-v01@openssh.com {blob}"), KeyError::Certificate),
            ("ssh-ed25519".to_string(), KeyError::MissingBlob),
            (format!("ssh-rsa {blob}"), KeyError::TypeMismatch),
            (format!("ecdsa-sha2-nistp256 {blob}"), KeyError::TypeMismatch),
            ("ssh-ed25519 AAAA!!!!".to_string(), KeyError::BadBase64),
            (format!("ssh-ed25519 {blob}x"), KeyError::BadBase64),
            (format!("{ED25519} {ED25519}"), KeyError::SeveralKeys),
            (format!("ssh-ed25519 {blob} {}", "c".repeat(300)), KeyError::CommentTooLong),
            ("-----BEGIN OPENSSH PRIVATE KEY-----".to_string(), KeyError::PrivateKey),
            ("---- BEGIN SSH2 PUBLIC KEY ----".to_string(), KeyError::Rfc4716),
            ("x".repeat(MAX_KEY_TEXT + 1), KeyError::TooLong(MAX_KEY_TEXT + 1)),
            ("ssh-foo AAAA".to_string(), KeyError::UnknownType("ssh-foo".to_string())),
        ];
        for (text, want) in cases {
            assert_eq!(parse_public_key(&text, &c), Err(want.clone()), "input {:?}", text.escape_debug().to_string());
            assert!(!want.to_string().contains('\n'));
        }
    }

    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBI3AJWSJHU9m5DLymYvpXBlQilmYutIcAPe19naruvMO7p048blHnMSAVwUxUcrCFMAZCDyhfNleibM1jrTmOKs= ec@test";
    const RSA_2048: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC34YkGiWe78OPWu/Q8/YARFmolnzdo5Ac/bea+wAwg0cI6418OZO7S7H5WWqbuNf3mKpga+HmVmTYATDtutctQrfjEwijOYs/wjx/Fyq4WKhPQ5xTd7qeVh+zPthhSrxxKU/3hT49NUqR2QJc4u/28c5+rDnJ5Xj+kauDZVSHfuqMaFklMvorXIQUiatsSZqyOV4/zof8AnYhcpSguII6qPknM4eTr95bvk22T4A7XWlzw3MNCJVO3uo/e/DDcqCRqtUcSXr/5RVQ5TGuhSBXYC6AzK3zYjC6nr3EBfRKuRKcGgwryeexONNP3SPxYtUgiiby9rJDscIrsr0aLxvQ1 short";

    #[test]
    fn ecdsa_and_non_canonical_base64() {
        let key = parse_public_key(ECDSA, &cfg()).unwrap();
        assert_eq!(key.fingerprint, "SHA256:riLzQ4XXmuCq0u7UToNGd0R/wrpNQLyHjoMKjk/YLFg");
        assert_eq!(key.bits, 256);
        // Same bytes, but the padding bits of the last character are set.
        let tweaked = ECDSA.replace("OKs=", "OKt=");
        let err = parse_public_key(&tweaked, &cfg()).unwrap_err();
        assert!(matches!(err, KeyError::NotCanonical | KeyError::BadBase64), "{err:?}");
        assert_eq!(parse_public_key(&ECDSA.replace("OKs=", "OKs"), &cfg()), Err(KeyError::BadBase64));
    }

    #[test]
    fn rsa_minimum() {
        assert_eq!(parse_public_key(RSA_2048, &cfg()), Err(KeyError::RsaTooShort { bits: 2048, min: 3072 }));
        let mut c = cfg();
        c.min_rsa_bits = 2048;
        assert_eq!(parse_public_key(RSA_2048, &c).unwrap().bits, 2048);
    }

    #[test]
    fn private_key_is_never_echoed() {
        let secret = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n";
        let err = parse_public_key(secret, &cfg()).unwrap_err();
        assert!(!err.to_string().contains("b3BlbnNz"));
    }

    #[test]
    fn type_allow_list() {
        let mut c = cfg();
        c.allowed_types = vec![KeyFamily::Rsa];
        assert_eq!(parse_public_key(ED25519, &c), Err(KeyError::TypeNotAllowed("ssh-ed25519".into())));
    }

    #[test]
    fn banned_list() {
        let key = parse_public_key(ED25519, &cfg()).unwrap();
        let list = format!("# weak keys\n{}\n\nnot a key\n", key.fingerprint);
        assert!(is_banned(&list, &key.fingerprint));
        assert!(is_banned(&format!("{ED25519}  # by line"), &key.fingerprint));
        assert!(!is_banned("SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s\n", &key.fingerprint));
    }

    #[test]
    fn fingerprint_shape() {
        assert!(is_fingerprint("SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"));
        assert!(!is_fingerprint("SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s\""));
        assert!(!is_fingerprint("MD5:aa"));
        assert!(!is_fingerprint("SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2"));
    }
}
