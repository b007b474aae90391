//! Public key text as users paste it (web page, API, CLI, directory values), and the
//! banned-keys file an operator keeps.
#![no_main]

use base64ct::Encoding;
use gatehouse::config::Config;
use gatehouse::keys::{
    is_banned, is_fingerprint, is_invisible, parse_public_key, KeyError, ValidKey, MAX_COMMENT, MAX_RSA_BITS,
};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

/// The default rules, and the most permissive ones an operator can set.
static CONFIGS: LazyLock<(Config, Config)> = LazyLock::new(|| {
    let mut permissive = Config::default();
    permissive.keys.min_rsa_bits = 2048;
    (Config::default(), permissive)
});

const SOME_FINGERPRINT: &str = "SHA256:UCUiLr7Pjs9wFFJMDByLgc3NrtdU344OgUM45wZPcIQ";

/// What every accepted key must be, since it goes into the store and into key lines.
fn check_accepted(key: &ValidKey, config: &Config) {
    assert!(is_fingerprint(&key.fingerprint), "{key:?}");
    let bits_ok = match key.algorithm.as_str() {
        "ssh-rsa" => (config.keys.min_rsa_bits..=MAX_RSA_BITS).contains(&key.bits),
        "ecdsa-sha2-nistp384" => key.bits == 384,
        "ecdsa-sha2-nistp521" => key.bits == 521,
        "ssh-ed25519" | "ecdsa-sha2-nistp256" | "sk-ssh-ed25519@openssh.com" | "sk-ecdsa-sha2-nistp256@openssh.com" => {
            key.bits == 256
        }
        _ => false,
    };
    assert!(bits_ok, "{key:?}");
    let decoded = base64ct::Base64::decode_vec(&key.blob).expect("the blob is base64");
    assert_eq!(base64ct::Base64::encode_string(&decoded), key.blob, "the blob is canonical");
    assert!(!key.comment.chars().any(|c| c.is_control() || is_invisible(c)), "{key:?}");
    assert!(key.comment.chars().count() <= MAX_COMMENT);
    assert_eq!(key.comment, key.comment.trim_matches(' '));
    // What we print is what we accept again: key lines, /USER.keys, exports.
    let printed = format!("{} {} {}", key.algorithm, key.blob, key.comment);
    assert_eq!(parse_public_key(&printed, config).as_ref(), Ok(key), "{printed:?}");
    assert!(is_banned(&key.fingerprint, &key.fingerprint));
    assert!(is_banned(&format!("{} {}  # banned", key.algorithm, key.blob), &key.fingerprint));
}

fn check_refused(text: &str, error: &KeyError) {
    let shown = error.to_string();
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    if text.contains("PRIVATE KEY") {
        assert_eq!(*error, KeyError::PrivateKey);
        assert!(!shown.contains(text));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (strict, permissive) = &*CONFIGS;
    let by_default = parse_public_key(text, strict);
    let by_permissive = parse_public_key(text, permissive);
    for (result, config) in [(&by_default, strict), (&by_permissive, permissive)] {
        match result {
            Ok(key) => check_accepted(key, config),
            Err(e) => check_refused(text, e),
        }
    }
    // Loosening the RSA minimum never turns another key away.
    if let Ok(key) = &by_default {
        assert_eq!(by_permissive.as_ref(), Ok(key));
    }
    // The list may hold anything an operator (or a damaged file) has.
    let _ = is_banned(text, SOME_FINGERPRINT);
    if let Ok(key) = &by_permissive {
        let _ = is_banned(text, &key.fingerprint);
    }
});
