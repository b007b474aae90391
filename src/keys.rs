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
/// Largest RSA key accepted: OpenSSH's own limit (`SSH_RSA_MAXIMUM_MODULUS_SIZE`).
pub const MAX_RSA_BITS: u32 = 16384;
/// Smallest RSA public exponent accepted: small exponents invite the attacks on textbook
/// RSA, and every key generator in use picks 65537.
pub const MIN_RSA_EXPONENT: u32 = 65537;

/// Characters that show nothing, or change how the text around them is shown: Unicode's
/// format characters (bidirectional controls such as U+202E, zero-width spaces and
/// joiners, the byte-order mark, tags), the line and paragraph separators, variation
/// selectors and the Hangul fillers. A comment holding one can read as something it is not
/// in a terminal or a browser, so comments refuse them as they refuse control characters.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x034F
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// Text as it may be shown: control and invisible characters left out. For stored text
/// written before those were refused, and as a last wall wherever text is printed.
pub fn shown(text: &str) -> String {
    text.chars().filter(|&c| !c.is_control() && !is_invisible(c)).collect()
}

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
    InvisibleCharacter { code: u32, column: usize },
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
    RsaTooLong { bits: u32 },
    RsaWeakExponent,
    RsaEvenModulus,
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
            KeyError::InvisibleCharacter { code, column } => write!(
                f,
                "invisible or text-direction character U+{code:04X} at column {column}; a comment must show what it says"
            ),
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
            KeyError::RsaTooLong { bits } => {
                write!(f, "RSA key has {bits} bits; at most {MAX_RSA_BITS} are accepted (OpenSSH's limit)")
            }
            KeyError::RsaWeakExponent => {
                write!(f, "RSA public exponent is even or below {MIN_RSA_EXPONENT}: not a safe RSA key")
            }
            KeyError::RsaEvenModulus => write!(f, "RSA modulus is even: not a valid RSA key"),
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

/// The big-endian magnitude of a non-negative mpint without leading zero bytes; `None` for
/// a negative one.
fn magnitude(m: &ssh_key::Mpint) -> Option<&[u8]> {
    let bytes = m.as_positive_bytes()?;
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    Some(&bytes[start..])
}

/// What ssh-key does not check: an odd public exponent of at least 65537 (e = 1 makes the
/// "signature" the message itself; e = 3 and other small ones break under known attacks),
/// and an odd modulus (an even one has the factor 2 for everyone to see).
fn check_rsa_numbers(rsa: &ssh_key::public::RsaPublicKey) -> Result<(), KeyError> {
    let e = magnitude(&rsa.e).ok_or(KeyError::RsaWeakExponent)?;
    let e_odd = e.last().is_some_and(|b| b & 1 == 1);
    let e_large = e.len() > 4 || e.iter().fold(0u64, |v, &b| v << 8 | u64::from(b)) >= u64::from(MIN_RSA_EXPONENT);
    if !e_odd || !e_large {
        return Err(KeyError::RsaWeakExponent);
    }
    let n = magnitude(&rsa.n).ok_or(KeyError::RsaEvenModulus)?;
    if n.last().is_none_or(|b| b & 1 == 0) {
        return Err(KeyError::RsaEvenModulus);
    }
    Ok(())
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
    if let Some((column, c)) = text.chars().enumerate().find(|&(_, c)| is_invisible(c)) {
        return Err(KeyError::InvisibleCharacter { code: c as u32, column: column + 1 });
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
    if !config.keys.allowed_types.contains(&family) {
        return Err(KeyError::TypeNotAllowed(key_type.to_string()));
    }
    let bits = key_bits(key_data);
    if let KeyData::Rsa(rsa) = key_data {
        if bits > MAX_RSA_BITS {
            return Err(KeyError::RsaTooLong { bits });
        }
        if bits < config.keys.min_rsa_bits {
            return Err(KeyError::RsaTooShort { bits, min: config.keys.min_rsa_bits });
        }
        check_rsa_numbers(rsa)?;
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
        c.keys.min_rsa_bits = 2048;
        assert_eq!(parse_public_key(RSA_2048, &c).unwrap().bits, 2048);
    }

    /// An `ssh-rsa` key line with exponent `e` and modulus `n` (big-endian magnitudes).
    fn rsa_line(e: &[u8], n: &[u8]) -> String {
        use base64ct::Encoding;
        fn string(out: &mut Vec<u8>, bytes: &[u8]) {
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        fn mpint(out: &mut Vec<u8>, magnitude: &[u8]) {
            let mut bytes = magnitude.to_vec();
            if bytes.first().is_some_and(|b| b & 0x80 != 0) {
                bytes.insert(0, 0);
            }
            string(out, &bytes);
        }
        let mut blob = Vec::new();
        string(&mut blob, b"ssh-rsa");
        mpint(&mut blob, e);
        mpint(&mut blob, n);
        format!("ssh-rsa {} crafted", base64ct::Base64::encode_string(&blob))
    }

    /// The modulus of [`RSA_2048`], a real one.
    fn modulus_2048() -> Vec<u8> {
        let key = PublicKey::from_openssh(RSA_2048).unwrap();
        let KeyData::Rsa(rsa) = key.key_data() else { panic!("not RSA") };
        magnitude(&rsa.n).unwrap().to_vec()
    }

    #[test]
    fn weak_rsa_numbers_are_refused() {
        let mut c = cfg();
        c.keys.min_rsa_bits = 2048;
        let n = modulus_2048();
        assert!(parse_public_key(&rsa_line(&[1, 0, 1], &n), &c).is_ok(), "65537 is the usual exponent");
        assert!(parse_public_key(&rsa_line(&[1, 0, 0, 0, 1], &n), &c).is_ok(), "a larger odd one is fine");
        for e in [&[1u8][..], &[3], &[17], &[1, 0, 0], &[0, 0xff, 0xff], &[1, 0, 0, 0, 0]] {
            assert_eq!(parse_public_key(&rsa_line(e, &n), &c), Err(KeyError::RsaWeakExponent), "e = {e:?}");
        }
        let mut even = n.clone();
        if let Some(last) = even.last_mut() {
            *last &= 0xfe;
        }
        assert_eq!(parse_public_key(&rsa_line(&[1, 0, 1], &even), &c), Err(KeyError::RsaEvenModulus));
        // Above OpenSSH's 16384 bits: refused before anything else is looked at.
        let mut huge = vec![0xc5u8; 16392 / 8];
        huge[0] = 0x80;
        assert_eq!(parse_public_key(&rsa_line(&[1, 0, 1], &huge), &c), Err(KeyError::RsaTooLong { bits: 16392 }));
        let mut largest = vec![0xc5u8; 16384 / 8];
        largest[0] = 0x80;
        assert!(parse_public_key(&rsa_line(&[1, 0, 1], &largest), &c).is_ok(), "16384 bits is OpenSSH's maximum");
        for e in [KeyError::RsaWeakExponent, KeyError::RsaEvenModulus, KeyError::RsaTooLong { bits: 20000 }] {
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn invisible_characters_in_comments_are_refused() {
        let c = cfg();
        let base = ED25519.replace(" foo@bar.com", "");
        for ch in [
            '\u{202E}',
            '\u{200B}',
            '\u{2066}',
            '\u{2069}',
            '\u{200F}',
            '\u{FEFF}',
            '\u{2028}',
            '\u{E0041}',
            '\u{00AD}',
        ] {
            let text = format!("{base} alice{ch}@laptop");
            let column = base.chars().count() + 7;
            assert_eq!(
                parse_public_key(&text, &c),
                Err(KeyError::InvisibleCharacter { code: ch as u32, column }),
                "U+{:04X}",
                ch as u32
            );
        }
        // Visible text in any script is fine.
        assert_eq!(parse_public_key(&format!("{base} Zoë's clé, 研究室"), &c).unwrap().comment, "Zoë's clé, 研究室");
        assert_eq!(shown("a\u{202E}b\u{200B}c\nd"), "abcd");
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
        c.keys.allowed_types = vec![KeyFamily::Rsa];
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
