//! gatehouse.toml: root-owned, but read by every program, the PAM module inside sshd
//! included, where a panic or a confusing error locks everyone out.
#![no_main]

use gatehouse::config::Config;
use libfuzzer_sys::fuzz_target;

/// Names the programs put through the user-name rule and into paths.
const NAMES: [&str; 6] = ["alice", "", ".", "..", "a/b", "root"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse("fuzz.toml", text) {
        Ok(config) => {
            for name in NAMES {
                if config.valid_user_name(name) {
                    let _ = config.data_dir_of(name);
                }
            }
            assert!(config.users.uid_min <= config.users.uid_max);
            assert!(!config.keys.allowed_types.is_empty());
        }
        // Operators read it in a terminal or the journal: one line that says where.
        Err(e) => {
            assert!(e.0.starts_with("fuzz.toml:"), "{:?}", e.0);
            assert!(!e.0.contains('\n'), "{:?}", e.0);
        }
    }
});
