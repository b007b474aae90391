//! `SSH_ORIGINAL_COMMAND`, parsed exactly as git, sftp and rsync clients send it, into a
//! request that is executed as an argv: no shell sees it unless the key has shell scope.

/// Longest command accepted from a key without shell scope; checked before any parsing.
pub const MAX_COMMAND: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitVerb {
    UploadPack,
    ReceivePack,
    UploadArchive,
}

impl GitVerb {
    /// The git subcommand that serves it.
    pub fn subcommand(self) -> &'static str {
        match self {
            GitVerb::UploadPack => "upload-pack",
            GitVerb::ReceivePack => "receive-pack",
            GitVerb::UploadArchive => "upload-archive",
        }
    }

    pub fn writes(self) -> bool {
        self == GitVerb::ReceivePack
    }
}

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// No command: an interactive login.
    Interactive,
    /// A git transport command with the repository path as the client sent it.
    Git { verb: GitVerb, path: String },
    /// The sftp subsystem (sshd passes its `Subsystem sftp` command line).
    Sftp,
    /// `rsync --server …`: the arguments after `rsync`, checked against the allow-list.
    Rsync { args: Vec<String> },
    /// Anything else: only a shell-scope key may run it, through the user's shell.
    Other(String),
}

/// Why a command was refused; the text is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

fn refused<T>(text: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(text.into()))
}

/// Undoes git's `sq_quote`: `'…'`, with `'\''` for a quote and `'\!'` for `!`. A bare word
/// of plain characters is accepted too. Anything else (a second word, an unclosed quote,
/// shell syntax) is refused.
fn git_argument(text: &str) -> Result<String, Refused> {
    if !text.starts_with('\'') {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._~-".contains(&b)) {
            return Ok(text.to_string());
        }
        return refused("the repository path must be one quoted word");
    }
    let mut out = String::new();
    let mut rest = &text[1..];
    loop {
        let Some(end) = rest.find('\'') else {
            return refused("unterminated quote in the repository path");
        };
        out.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        if rest.is_empty() {
            return Ok(out);
        }
        // Only git's escapes may follow a closing quote: \' or \! and a new opening quote.
        match rest.as_bytes() {
            [b'\\', c @ (b'\'' | b'!'), b'\'', ..] => {
                out.push(*c as char);
                rest = &rest[3..];
            }
            _ => return refused("extra words after the repository path"),
        }
    }
}

/// Splits an rsync server command line the way rsync 3.2.4+ escapes it: words separated by
/// spaces, a backslash taking the next character literally.
fn rsync_words(text: &str) -> Result<Vec<String>, Refused> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = text.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            ' ' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                let Some(next) = chars.next() else {
                    return refused("trailing backslash in the rsync command");
                };
                word.push(next);
                in_word = true;
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Parses the command a client sent. `None` is an interactive login.
pub fn parse(command: Option<&str>) -> Result<Request, Refused> {
    let Some(command) = command else {
        return Ok(Request::Interactive);
    };
    if command.len() > MAX_COMMAND {
        return refused(format!("command longer than {MAX_COMMAND} bytes"));
    }
    if let Some(c) = command.chars().find(|c| c.is_control()) {
        return refused(format!("control character U+{:04X} in the command", c as u32));
    }
    let (verb, rest) = command.split_once(' ').unwrap_or((command, ""));
    let git = |verb: GitVerb, arg: &str| Ok(Request::Git { verb, path: git_argument(arg)? });
    match verb {
        "git-upload-pack" => git(GitVerb::UploadPack, rest),
        "git-receive-pack" => git(GitVerb::ReceivePack, rest),
        "git-upload-archive" => git(GitVerb::UploadArchive, rest),
        "git" => {
            let (sub, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            match sub {
                "upload-pack" => git(GitVerb::UploadPack, arg),
                "receive-pack" => git(GitVerb::ReceivePack, arg),
                "upload-archive" => git(GitVerb::UploadArchive, arg),
                _ => Ok(Request::Other(command.to_string())),
            }
        }
        "internal-sftp" => sftp(rest),
        v if v.rsplit('/').next() == Some("sftp-server") => sftp(rest),
        "rsync" => {
            let args = rsync_words(rest)?;
            if args.first().map(String::as_str) == Some("--server") {
                crate::forced::rsync::check_server_args(&args).map_err(Refused)?;
                Ok(Request::Rsync { args })
            } else {
                Ok(Request::Other(command.to_string()))
            }
        }
        _ => Ok(Request::Other(command.to_string())),
    }
}

/// sftp-server's own options as sshd's `Subsystem` line may give them; the server is
/// started with Gatehouse's options, so these are only checked, never passed on.
fn sftp(args: &str) -> Result<Request, Refused> {
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    while let Some(word) = words.next() {
        match word {
            "-e" => {}
            "-l" | "-f" | "-u" => {
                let value = words.next().unwrap_or("");
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return refused("bad sftp-server option value");
                }
            }
            _ => return refused(format!("sftp-server option `{}` not allowed", word.escape_debug())),
        }
    }
    Ok(Request::Sftp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(verb: GitVerb, path: &str) -> Result<Request, Refused> {
        Ok(Request::Git { verb, path: path.into() })
    }

    #[test]
    fn git_commands_as_clients_send_them() {
        assert_eq!(parse(Some("git-upload-pack 'alice/x.git'")), git(GitVerb::UploadPack, "alice/x.git"));
        assert_eq!(parse(Some("git-receive-pack '/alice/x.git'")), git(GitVerb::ReceivePack, "/alice/x.git"));
        assert_eq!(parse(Some("git upload-pack 'alice/x.git'")), git(GitVerb::UploadPack, "alice/x.git"));
        assert_eq!(parse(Some("git-upload-archive 'alice/x.git'")), git(GitVerb::UploadArchive, "alice/x.git"));
        assert_eq!(parse(Some("git-upload-pack alice/x.git")), git(GitVerb::UploadPack, "alice/x.git"));
        assert_eq!(parse(Some("git-upload-pack 'it'\\''s.git'")), git(GitVerb::UploadPack, "it's.git"));
        assert_eq!(parse(Some("git-upload-pack 'a'\\!'b'")), git(GitVerb::UploadPack, "a!b"));
    }

    #[test]
    fn git_refusals() {
        for bad in [
            "git-upload-pack 'alice/x.git' extra",
            "git-upload-pack 'alice/x.git'; rm -rf ~",
            "git-upload-pack 'alice/x.git",
            "git-upload-pack alice/x.git;id",
            "git-upload-pack $(id)",
            "git-upload-pack `id`",
            "git-upload-pack",
            "git-upload-pack 'a' 'b'",
            "git-upload-pack 'x'\\''",
            "git-upload-pack 'alice/x.git'\n",
        ] {
            assert!(parse(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(parse(Some(&"a".repeat(MAX_COMMAND + 1))).is_err());
        // Unknown verbs are not refused here: only shell scope may run them, decided later.
        assert_eq!(parse(Some("git-cvsserver")), Ok(Request::Other("git-cvsserver".into())));
        assert_eq!(parse(Some("scp -t /etc")), Ok(Request::Other("scp -t /etc".into())));
    }

    #[test]
    fn sftp_and_rsync() {
        assert_eq!(parse(Some("internal-sftp")), Ok(Request::Sftp));
        assert_eq!(parse(Some("/usr/lib/openssh/sftp-server -l INFO")), Ok(Request::Sftp));
        assert!(parse(Some("/usr/lib/openssh/sftp-server -d /")).is_err());
        let r = parse(Some("rsync --server -vlogDtpre.iLsfxCIvu . my\\ dir/")).unwrap();
        assert_eq!(
            r,
            Request::Rsync {
                args: vec!["--server".into(), "-vlogDtpre.iLsfxCIvu".into(), ".".into(), "my dir/".into()]
            }
        );
        assert!(parse(Some("rsync --server --rsh=sh . x")).is_err());
        assert_eq!(parse(Some("rsync --version")), Ok(Request::Other("rsync --version".into())));
        assert_eq!(parse(None), Ok(Request::Interactive));
    }
}
