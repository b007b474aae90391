//! Writes a synthetic `import tsv` file for benchmarks: `USERS` users named `u000000`,
//! `u000001`, … with `KEYS` ed25519 keys each, one `user<TAB>key line` per line.
//!
//! The key bytes come from a fixed-seed splitmix64, so the same arguments always give the
//! same file (and the same fingerprints). The keys are random 32-byte strings, not points
//! anyone holds a private key for: they exercise the store, never a real login.
//!
//! usage: cargo run --release --example gen_keys -- USERS KEYS_PER_USER OUTPUT

use ssh_key::public::{Ed25519PublicKey, KeyData};
use ssh_key::PublicKey;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

#[path = "common/prng.rs"]
mod prng;
use prng::SplitMix64;

fn run(users: u64, per_user: u64, output: &str) -> Result<(), String> {
    let file = std::fs::File::create(output).map_err(|e| format!("{output}: {e}"))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut rng = SplitMix64(0x6761_7465_686f_7573); // "gatehous"
    for u in 0..users {
        for k in 0..per_user {
            let mut bytes = [0u8; 32];
            for chunk in bytes.chunks_exact_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes());
            }
            let comment = format!("bench-{u}-{k}");
            let key = PublicKey::new(KeyData::Ed25519(Ed25519PublicKey(bytes)), comment);
            let line = key.to_openssh().map_err(|e| format!("encoding key: {e}"))?;
            writeln!(out, "u{u:06}\t{line}").map_err(|e| format!("{output}: {e}"))?;
        }
    }
    out.flush().map_err(|e| format!("{output}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [users, keys, output] => users.parse::<u64>().ok().zip(keys.parse::<u64>().ok()).map(|(u, k)| (u, k, output)),
        _ => None,
    };
    let Some((users, keys, output)) = parsed else {
        eprintln!("usage: gen_keys USERS KEYS_PER_USER OUTPUT");
        return ExitCode::from(2);
    };
    match run(users, keys, output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_keys: {e}");
            ExitCode::FAILURE
        }
    }
}
