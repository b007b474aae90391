//! Writes synthetic directory data for benches/ldap.sh, as LDIF for slapadd and ldapmodify:
//! `USERS` posixAccount users `u000000`, `u000001`, … under `ou=people,BASE_DN`, with
//! `KEYS` ed25519 keys each (sshPublicKey) and uidNumber from 100000; `GROUPS` posixGroups
//! `g0000`, … under `ou=groups` sharing the users out evenly (memberUid); and two files of
//! modifications for ldapmodify: `MODIFIED` users spread over the range each get their last
//! key replaced by a new one, then that one by another.
//!
//! The key bytes come from a fixed-seed splitmix64 (as in gen_keys.rs), so the same
//! arguments always give the same files. The keys are random 32-byte strings, not points
//! anyone holds a private key for: they exercise the sync and the store, never a login.
//!
//! usage: cargo run --release --example gen_ldap -- BASE_DN USERS KEYS GROUPS MODIFIED LOAD.ldif MODIFY1.ldif MODIFY2.ldif

use ssh_key::public::{Ed25519PublicKey, KeyData};
use ssh_key::PublicKey;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

#[path = "common/prng.rs"]
mod prng;
use prng::SplitMix64;

trait Keys {
    fn key(&mut self, comment: String) -> Result<String, String>;
}

impl Keys for SplitMix64 {
    fn key(&mut self, comment: String) -> Result<String, String> {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        PublicKey::new(KeyData::Ed25519(Ed25519PublicKey(bytes)), comment)
            .to_openssh()
            .map_err(|e| format!("encoding key: {e}"))
    }
}

struct Plan<'a> {
    base: &'a str,
    users: u64,
    keys: u64,
    groups: u64,
    modified: u64,
}

fn create(path: &str) -> Result<BufWriter<std::fs::File>, String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{path}: {e}"))?;
    Ok(BufWriter::with_capacity(1 << 20, file))
}

fn run(plan: &Plan<'_>, load: &str, modify: [&str; 2]) -> Result<(), String> {
    let base = plan.base;
    let mut out = create(load)?;
    let w = |out: &mut BufWriter<std::fs::File>, text: String| {
        out.write_all(text.as_bytes()).map_err(|e| format!("{load}: {e}"))
    };
    for ou in ["people", "groups"] {
        w(&mut out, format!("dn: ou={ou},{base}\nobjectClass: organizationalUnit\nou: {ou}\n\n"))?;
    }
    let mut rng = SplitMix64(0x6761_7465_686f_7573); // "gatehous"
    for u in 0..plan.users {
        let mut entry = format!(
            "dn: uid=u{u:06},ou=people,{base}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
             objectClass: ldapPublicKey\nuid: u{u:06}\ncn: User {u}\nsn: {u}\nuidNumber: {}\ngidNumber: {}\n\
             homeDirectory: /home/u{u:06}\n",
            100_000 + u,
            100_000 + u
        );
        for k in 0..plan.keys {
            entry.push_str(&format!("sshPublicKey: {}\n", rng.key(format!("bench-{u}-{k}"))?));
        }
        entry.push('\n');
        w(&mut out, entry)?;
    }
    for g in 0..plan.groups {
        let mut entry = format!(
            "dn: cn=g{g:04},ou=groups,{base}\nobjectClass: posixGroup\ncn: g{g:04}\ngidNumber: {}\n",
            200_000 + g
        );
        // User u belongs to group u % groups.
        let mut u = g;
        while u < plan.users {
            entry.push_str(&format!("memberUid: u{u:06}\n"));
            u += plan.groups;
        }
        entry.push('\n');
        w(&mut out, entry)?;
    }
    out.flush().map_err(|e| format!("{load}: {e}"))?;

    // Modifications of `modified` users spread over the range: in the first file each
    // gets its last key replaced by a new one, in the second that new key by another. The
    // old keys are generated again from the same seeds, so the files name them exactly.
    let mut first = create(modify[0])?;
    let mut second = create(modify[1])?;
    let step = (plan.users / plan.modified.max(1)).max(1);
    let mut rng = SplitMix64(0x6761_7465_686f_7573);
    let mut fresh = SplitMix64(0x6d6f_6469_6679_2121); // "modify!!"
    let replace = |u: u64, old: &str, new: &str| {
        format!(
            "dn: uid=u{u:06},ou=people,{base}\nchangetype: modify\ndelete: sshPublicKey\nsshPublicKey: {old}\n-\n\
             add: sshPublicKey\nsshPublicKey: {new}\n\n"
        )
    };
    for u in 0..plan.users {
        let keys: Vec<String> = (0..plan.keys).map(|k| rng.key(format!("bench-{u}-{k}"))).collect::<Result<_, _>>()?;
        if u % step != 0 || u / step >= plan.modified {
            continue;
        }
        let Some(last) = keys.last() else { continue };
        let new = fresh.key(format!("bench-{u}-new"))?;
        let newer = fresh.key(format!("bench-{u}-newer"))?;
        first.write_all(replace(u, last, &new).as_bytes()).map_err(|e| format!("{}: {e}", modify[0]))?;
        second.write_all(replace(u, &new, &newer).as_bytes()).map_err(|e| format!("{}: {e}", modify[1]))?;
    }
    first.flush().map_err(|e| format!("{}: {e}", modify[0]))?;
    second.flush().map_err(|e| format!("{}: {e}", modify[1]))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |s: &String| s.parse::<u64>().ok();
    let parsed = match args.as_slice() {
        [base, users, keys, groups, modified, load, modify1, modify2] => {
            match (number(users), number(keys), number(groups), number(modified)) {
                (Some(users), Some(keys), Some(groups), Some(modified)) => {
                    Some((Plan { base, users, keys, groups, modified }, load, [modify1.as_str(), modify2.as_str()]))
                }
                _ => None,
            }
        }
        _ => None,
    };
    let Some((plan, load, modify)) = parsed else {
        eprintln!("usage: gen_ldap BASE_DN USERS KEYS GROUPS MODIFIED LOAD.ldif MODIFY1.ldif MODIFY2.ldif");
        return ExitCode::from(2);
    };
    match run(&plan, load, modify) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_ldap: {e}");
            ExitCode::FAILURE
        }
    }
}
