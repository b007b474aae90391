//! `rsync --server` arguments, checked against an allow-list in the spirit of rrsync: the
//! transfer options rsync clients send, and nothing that names a file outside the
//! transfer, runs a program or changes the daemon.

/// Short options allowed before the `e.` capability string.
const SHORT: &str = "ACDEHIJKLNORSUWXbcdgiklmnoprtuvxyz";

/// Long options allowed without a value.
const LONG_FLAGS: &[&str] = &[
    "--server",
    "--sender",
    "--delete",
    "--delete-before",
    "--delete-during",
    "--delete-delay",
    "--delete-after",
    "--delete-excluded",
    "--delete-missing-args",
    "--ignore-errors",
    "--ignore-existing",
    "--ignore-missing-args",
    "--existing",
    "--size-only",
    "--numeric-ids",
    "--inplace",
    "--append",
    "--append-verify",
    "--partial",
    "--safe-links",
    "--munge-links",
    "--copy-unsafe-links",
    "--no-implied-dirs",
    "--fake-super",
    "--remove-source-files",
    "--force",
    "--list-only",
    "--from0",
    "--mkpath",
    "--trust-sender",
    "--no-r",
    "--no-W",
];

/// Long options allowed with a value, and the characters the value may hold.
const LONG_VALUES: &[(&str, &str)] = &[
    ("--modify-window", "-0123456789"),
    ("--compress-level", "0123456789"),
    ("--max-size", "0123456789.kKmMgGbB+-"),
    ("--min-size", "0123456789.kKmMgGbB+-"),
    ("--bwlimit", "0123456789.kKmMgG"),
    ("--timeout", "0123456789"),
    ("--contimeout", "0123456789"),
    ("--checksum-seed", "0123456789"),
    ("--block-size", "0123456789"),
    ("--max-delete", "0123456789"),
    ("--max-alloc", "0123456789kKmMgG"),
    ("--chmod", "ugoaDF+-=rwxXst,01234567"),
    ("--info", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789,-"),
    ("--debug", "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789,-"),
    ("--compress-choice", "abcdefghijklmnopqrstuvwxyz0123456789"),
    ("--zc", "abcdefghijklmnopqrstuvwxyz0123456789"),
    ("--checksum-choice", "abcdefghijklmnopqrstuvwxyz0123456789,"),
    ("--cc", "abcdefghijklmnopqrstuvwxyz0123456789,"),
    ("--zl", "0123456789-"),
];

fn check_option(arg: &str) -> Result<(), String> {
    let not_allowed = || format!("rsync option `{}` is not allowed", arg.escape_debug());
    if let Some(long) = arg.strip_prefix("--") {
        let (name, value) = match long.split_once('=') {
            Some((n, v)) => (format!("--{n}"), Some(v)),
            None => (arg.to_string(), None),
        };
        return match value {
            None if LONG_FLAGS.contains(&name.as_str()) => Ok(()),
            Some(v) => match LONG_VALUES.iter().find(|(n, _)| *n == name) {
                Some((_, chars)) if !v.is_empty() && v.len() <= 64 && v.chars().all(|c| chars.contains(c)) => Ok(()),
                _ => Err(not_allowed()),
            },
            None => Err(not_allowed()),
        };
    }
    let cluster = arg.strip_prefix('-').ok_or_else(not_allowed)?;
    // `e.` starts the protocol capability letters, which end the cluster.
    let (flags, capabilities) = match cluster.find('e') {
        Some(i) => (&cluster[..i], Some(&cluster[i + 1..])),
        None => (cluster, None),
    };
    if flags.is_empty() && capabilities.is_none() {
        return Err(not_allowed());
    }
    if !flags.chars().all(|c| SHORT.contains(c)) {
        return Err(not_allowed());
    }
    if let Some(caps) = capabilities {
        if !caps.starts_with('.') || !caps[1..].chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(not_allowed());
        }
    }
    Ok(())
}

/// Checks a transfer path: relative, no `..`, no `~`, printable.
pub fn check_path(path: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("rsync path `{}` {why}", path.escape_debug()));
    if path.starts_with('/') {
        return bad("must be relative to your data folder");
    }
    if path.starts_with('~') {
        return bad("must not name a home folder");
    }
    if path.starts_with('-') {
        return bad("must not start with -");
    }
    if path.split('/').any(|c| c == "..") {
        return bad("must not contain ..");
    }
    Ok(())
}

/// Checks `--server [options] . path…` as sent by an rsync client.
pub fn check_server_args(args: &[String]) -> Result<(), String> {
    let Some(dot) = args.iter().position(|a| a == ".") else {
        return Err("rsync command without the `.` separator".to_string());
    };
    for arg in &args[..dot] {
        check_option(arg)?;
    }
    let paths = &args[dot + 1..];
    if paths.is_empty() {
        return Err("rsync command without a path".to_string());
    }
    for path in paths {
        check_path(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn what_clients_send() {
        for ok in [
            "--server -vlogDtpre.iLsfxCIvu . project/",
            "--server --sender -vlogDtpre.iLsfxCIvu . project/",
            "--server -logDtpre.iLsfxCIvu --delete --partial --info=progress2 . ./",
            "--server -re.iLsfxCIvu --bwlimit=1000 --chmod=Du+rwx,Fgo-w . a/b c",
        ] {
            assert_eq!(check_server_args(&args(ok)), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refusals() {
        for bad in [
            "--server -vlogDtpre.iLsfxCIvu . /etc",
            "--server -vlogDtpre.iLsfxCIvu . ../bob",
            "--server -vlogDtpre.iLsfxCIvu . a/../../etc",
            "--server -vlogDtpre.iLsfxCIvu . ~bob",
            "--server --rsh=sh . x",
            "--server --log-file=/tmp/x . x",
            "--server --files-from=/etc/shadow . x",
            "--server --daemon . x",
            "--server --config=/x . x",
            "--server --temp-dir=/tmp . x",
            "--server --link-dest=/data/bob . x",
            "--server --write-batch=x . x",
            "--server -s . x",
            "--server -vlogDtpre.iLs;id . x",
            "--server -vlogDtpr",
            "--server --chmod=$(id) . x",
            "--server . -x",
        ] {
            assert!(check_server_args(&args(bad)).is_err(), "{bad}");
        }
    }
}
