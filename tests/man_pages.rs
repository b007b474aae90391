//! Docs do not drift: every flag, command and configuration key the code defines appears in
//! its manual page under man/, and each page passes a formatter's lint when one is installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

const PAGES: [&str; 9] = [
    "man/gatehouse.8",
    "man/gatehouse-agent.8",
    "man/gatehouse-keys.8",
    "man/gatehouse-ldap.8",
    "man/gatehouse-shell.8",
    "man/gatehoused.8",
    "man/gatehouse-session.8",
    "man/pam_gatehouse.8",
    "man/gatehouse.toml.5",
];

fn path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Whether `text` holds `needle` as whole words (`Fl -sshd` does not count as `Fl -ssh`).
fn mentions(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(at, _)| !text[at + needle.len()..].starts_with(is_word))
}

/// The long options (`--name`, returned as `name`) in a help or usage text.
fn long_flags(text: &str) -> BTreeSet<String> {
    text.match_indices("--")
        .filter(|(at, _)| !text[..*at].ends_with(is_word))
        .map(|(at, _)| text[at + 2..].chars().take_while(|&c| is_word(c)).collect::<String>())
        .filter(|name| !name.is_empty())
        .collect()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Every command path of `gatehouse` (`["user", "add"]`, …) and every long flag, read from
/// the built binary's `--help` output.
fn gatehouse_cli() -> (Vec<Vec<String>>, BTreeSet<String>) {
    let (mut commands, mut flags) = (Vec::new(), BTreeSet::new());
    let mut queue = vec![Vec::<String>::new()];
    while let Some(command) = queue.pop() {
        let mut args: Vec<&str> = command.iter().map(String::as_str).collect();
        args.push("--help");
        let out = run(env!("CARGO_BIN_EXE_gatehouse"), &args);
        assert!(out.status.success(), "gatehouse {args:?} failed");
        let help = String::from_utf8(out.stdout).unwrap();
        flags.extend(long_flags(&help));
        let listed = help.lines().skip_while(|l| l.trim() != "Commands:").skip(1);
        for line in listed.take_while(|l| !l.trim().is_empty()) {
            let name = line.split_whitespace().next().unwrap();
            if name != "help" {
                let mut sub = command.clone();
                sub.push(name.to_string());
                queue.push(sub.clone());
                commands.push(sub);
            }
        }
    }
    (commands, flags)
}

/// The exit statuses a program's source returns with `ExitCode::from(exit::NAME)` (the
/// shared `gatehouse::exit` module), as numbers.
fn exit_statuses(source: &str) -> BTreeSet<String> {
    exit_codes(source, "ExitCode::from(exit::")
}

/// The statuses a source names anywhere as `exit::NAME`, as numbers.
fn exit_names(source: &str) -> BTreeSet<String> {
    exit_codes(source, "exit::")
}

fn exit_codes(source: &str, prefix: &str) -> BTreeSet<String> {
    use gatehouse::exit;
    let named = [
        ("OK", exit::OK),
        ("REFUSED", exit::REFUSED),
        ("USAGE", exit::USAGE),
        ("CONFIG", exit::CONFIG),
        ("STORE", exit::STORE),
        ("START", exit::START),
    ];
    source
        .match_indices(prefix)
        .filter(|(at, m)| source[at + m.len()..].starts_with(|c: char| c.is_ascii_uppercase()))
        .map(|(at, m)| {
            let name: String = source[at + m.len()..].chars().take_while(|c| c.is_ascii_uppercase()).collect();
            let code = named
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("exit::{name} is not in gatehouse::exit"));
            code.1.to_string()
        })
        .collect()
}

/// Long options an mdoc page documents, written `Fl -name`.
fn documented_flags(page: &str) -> BTreeSet<String> {
    page.match_indices("Fl -")
        .map(|(at, _)| page[at + 4..].chars().take_while(|&c| is_word(c)).collect::<String>())
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn gatehouse_8_documents_every_flag() {
    let page = read("man/gatehouse.8");
    let (_, flags) = gatehouse_cli();
    assert!(flags.contains("config") && flags.contains("sshd-config"), "{flags:?}");
    let missing: Vec<_> = flags.iter().filter(|f| !mentions(&page, &format!("Fl -{f}"))).collect();
    assert!(missing.is_empty(), "flags missing from man/gatehouse.8: {missing:?}");
    let stale: Vec<_> = documented_flags(&page).into_iter().filter(|f| !flags.contains(f)).collect();
    assert!(stale.is_empty(), "man/gatehouse.8 documents flags gatehouse lacks: {stale:?}");
}

#[test]
fn gatehouse_8_documents_every_command() {
    let page = read("man/gatehouse.8");
    let (commands, _) = gatehouse_cli();
    assert!(commands.len() > 10, "{commands:?}");
    let missing: Vec<_> =
        commands.iter().map(|c| c.join(" ")).filter(|c| !mentions(&page, &format!("Cm {c}"))).collect();
    assert!(missing.is_empty(), "commands missing from man/gatehouse.8: {missing:?}");
}

/// The fields of each `Raw*` struct in `source`: struct name, then (field, type) pairs.
fn raw_structs(source: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut structs: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut inside = false;
    for line in source.lines().map(str::trim) {
        if let Some((_, rest)) = line.split_once("struct Raw") {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
            structs.push((format!("Raw{name}"), Vec::new()));
            inside = true;
        } else if line == "}" {
            inside = false;
        } else if let (true, Some((field, ty))) = (inside, line.split_once(": ")) {
            // `name: Option<Type>,` or a required `name: Spanned<String>,`; not comments.
            let field = field.trim_start_matches("pub(super) ").trim_start_matches("pub ").to_string();
            if line.ends_with(',') && !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                let ty: String =
                    ty.trim_start_matches("Option<").chars().take_while(|c| c.is_alphanumeric() || *c == ':').collect();
                structs.last_mut().unwrap().1.push((field, ty));
            }
        }
    }
    structs
}

/// `section.key` for every field of the raw structs under src/config/, the section being
/// the `RawConfig` field that holds the struct (`store: Option<store::Raw>` is read from
/// src/config/store.rs).
fn config_keys() -> Vec<String> {
    let top = raw_structs(&read("src/config/mod.rs"));
    let sections = top.iter().find(|(n, _)| n == "RawConfig").expect("struct RawConfig in src/config/mod.rs").1.clone();
    let mut keys = Vec::new();
    for (section, ty) in sections {
        let (module, name) =
            ty.split_once("::").unwrap_or_else(|| panic!("RawConfig.{section}: {ty} is not module::Raw"));
        let file = format!("src/config/{module}.rs");
        let structs = raw_structs(&read(&file));
        let table = structs.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("struct {name} in {file}"));
        keys.extend(table.1.iter().map(|(key, _)| format!("{section}.{key}")));
    }
    keys
}

#[test]
fn gatehouse_toml_5_documents_every_key() {
    let page = read("man/gatehouse.toml.5");
    let keys = config_keys();
    assert!(keys.contains(&"store.path".to_string()), "{keys:?}");
    let missing: Vec<_> = keys.iter().filter(|k| !mentions(&page, &format!(".It Cm {k}"))).collect();
    assert!(missing.is_empty(), "keys missing from man/gatehouse.toml.5: {missing:?}");
    let stale: Vec<_> = page
        .lines()
        .filter_map(|l| l.strip_prefix(".It Cm "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|k| k.contains('.') && !keys.iter().any(|known| known == k))
        .collect();
    assert!(stale.is_empty(), "man/gatehouse.toml.5 documents unknown keys: {stale:?}");
}

#[test]
fn keys_and_shell_pages_document_their_arguments() {
    let keys_page = read("man/gatehouse-keys.8");
    let usage = run(env!("CARGO_BIN_EXE_gatehouse-keys"), &["--help"]);
    let flags = long_flags(&String::from_utf8_lossy(&usage.stdout));
    assert!(flags.contains("config"), "{flags:?}");
    for flag in &flags {
        assert!(mentions(&keys_page, &format!("Fl -{flag}")), "gatehouse-keys.8 lacks --{flag}");
    }
    for token in ["%u", "%f", "%t", "%k"] {
        assert!(keys_page.contains(&format!("Cm {token}")), "gatehouse-keys.8 lacks {token}");
    }
    // The drop-in is quoted in the page; both must say the same.
    let page_lines: BTreeSet<&str> = keys_page.lines().map(str::trim).collect();
    let drop_in = read("sshd_config.d/gatehouse.conf");
    for line in drop_in.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        assert!(page_lines.contains(line), "gatehouse-keys.8 does not quote `{line}`");
    }

    let shell_page = read("man/gatehouse-shell.8");
    // On a usage error gatehouse-shell prints its usage line.
    let usage = run(env!("CARGO_BIN_EXE_gatehouse-shell"), &["--key"]);
    let flags = long_flags(&String::from_utf8_lossy(&usage.stderr));
    assert!(flags.contains("config") && flags.contains("key"), "{flags:?}");
    for flag in &flags {
        assert!(mentions(&shell_page, &format!("Fl -{flag}")), "gatehouse-shell.8 lacks --{flag}");
    }
    // Every reason a refusal can log is explained.
    for reason in gatehouse::forced::Reason::ALL {
        assert!(
            mentions(&shell_page, &format!("Cm {}", reason.as_str())),
            "gatehouse-shell.8 lacks reason {}",
            reason.as_str()
        );
    }
    // %U starts with a character mdoc reads as a macro, so the page escapes it.
    assert!(keys_page.contains("Cm \\&%U"), "gatehouse-keys.8 lacks %U");
}

/// The text of section `name` of an mdoc page, up to the next `.Sh`.
fn section<'a>(page: &'a str, name: &str) -> &'a str {
    let heading = format!(".Sh {name}\n");
    let start = page.find(&heading).map(|at| at + heading.len()).unwrap_or(page.len());
    let rest = &page[start..];
    &rest[..rest.find(".Sh ").unwrap_or(rest.len())]
}

/// gatehoused is another package, so its binary is not at hand here: its flags and exit
/// codes are read from its source, web/src/lib.rs, where it parses its arguments by hand.
#[test]
fn gatehoused_8_documents_flags_and_exit_codes() {
    let page = read("man/gatehoused.8");
    let source = read("web/src/lib.rs");
    let flags: BTreeSet<String> = source
        .match_indices("\"--")
        .map(|(at, _)| source[at + 3..].chars().take_while(|&c| is_word(c)).collect::<String>())
        .filter(|name| !name.is_empty())
        .collect();
    for expected in ["config", "help", "version"] {
        assert!(flags.contains(expected), "web/src/lib.rs no longer parses --{expected}: {flags:?}");
    }
    // Its own options are in SYNOPSIS and DESCRIPTION; later sections quote gatehouse(8)'s.
    let own = format!("{}{}", section(&page, "SYNOPSIS"), section(&page, "DESCRIPTION"));
    let missing: Vec<_> = flags.iter().filter(|f| !mentions(&own, &format!("Fl -{f}"))).collect();
    assert!(missing.is_empty(), "flags missing from man/gatehoused.8: {missing:?}");
    let stale: Vec<_> = documented_flags(&own).into_iter().filter(|f| !flags.contains(f)).collect();
    assert!(stale.is_empty(), "man/gatehoused.8 documents flags gatehoused lacks: {stale:?}");

    // Every `exit::NAME` it returns has its `.It N` in EXIT STATUS, and nothing more.
    let codes = exit_names(&source);
    let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
    assert!(codes.len() >= 4, "{codes:?}");
    let status = section(&page, "EXIT STATUS");
    let documented: BTreeSet<&str> = status.lines().filter_map(|l| l.strip_prefix(".It ")).collect();
    let missing: Vec<_> = codes.iter().filter(|c| !documented.contains(*c)).collect();
    assert!(missing.is_empty(), "exit codes missing from man/gatehoused.8: {missing:?}");
    let stale: Vec<_> = documented.iter().filter(|c| !codes.contains(c)).collect();
    assert!(stale.is_empty(), "man/gatehoused.8 documents exit codes gatehoused lacks: {stale:?}");
}

/// gatehouse-ldap is another package too: its commands and flags are read from the usage
/// line in ldap/src/main.rs, and its exit codes from the same file.
#[test]
fn gatehouse_ldap_8_documents_commands_flags_and_exit_codes() {
    let page = read("man/gatehouse-ldap.8");
    let source = read("ldap/src/main.rs");
    // The string literal after `const USAGE: &str =`, on that line or the next.
    let after = &source[source.find("const USAGE: &str =").expect("USAGE in ldap/src/main.rs")..];
    let usage = &after[after.find('"').unwrap() + 1..];
    let usage = &usage[..usage.find('"').unwrap()];
    let flags = long_flags(usage);
    assert!(flags.contains("config") && flags.contains("full") && flags.contains("json"), "{flags:?}");
    let missing: Vec<_> = flags.iter().filter(|f| !mentions(&page, &format!("Fl -{f}"))).collect();
    assert!(missing.is_empty(), "flags missing from man/gatehouse-ldap.8: {missing:?}");
    let stale: Vec<_> = documented_flags(&page).into_iter().filter(|f| !flags.contains(f)).collect();
    assert!(stale.is_empty(), "man/gatehouse-ldap.8 documents flags gatehouse-ldap lacks: {stale:?}");

    // The commands: the first word of each `|` alternative once the `[...]` parts are dropped.
    let mut depth = 0i32;
    let bare: String = usage
        .chars()
        .filter(|&c| {
            depth += i32::from(c == '[') - i32::from(c == ']');
            depth == 0 && c != ']'
        })
        .collect();
    let commands: Vec<&str> = bare
        .trim_start_matches("usage: gatehouse-ldap")
        .split('|')
        .filter_map(|alternative| alternative.split_whitespace().next())
        .collect();
    assert!(commands.contains(&"sync") && commands.contains(&"check-password"), "{commands:?} from {usage}");
    let missing: Vec<_> = commands.iter().filter(|c| !mentions(&page, &format!("Cm {c}"))).collect();
    assert!(missing.is_empty(), "commands missing from man/gatehouse-ldap.8: {missing:?}");

    let mut codes = exit_statuses(&source);
    codes.insert("0".to_string());
    let status = section(&page, "EXIT STATUS");
    let documented: BTreeSet<String> =
        status.lines().filter_map(|l| l.strip_prefix(".It ")).map(str::to_string).collect();
    assert_eq!(documented, codes, "exit codes of man/gatehouse-ldap.8 and ldap/src/main.rs differ");
}

/// gatehouse-agent parses its arguments by hand in src/bin/gatehouse-agent.rs: its options
/// are the literals of the `Some("--name" | "-x")` arms there, and its exit statuses every
/// `exit::NAME` it names.
#[test]
fn gatehouse_agent_8_documents_flags_exit_codes_and_keys() {
    let page = read("man/gatehouse-agent.8");
    let source = read("src/bin/gatehouse-agent.rs");
    let options: BTreeSet<String> =
        literals(&source, &["Some(\"-"]).into_iter().filter(|o| o.starts_with('-')).collect();
    for expected in ["--config", "--once", "--help", "-h", "--version", "-V"] {
        assert!(options.contains(expected), "src/bin/gatehouse-agent.rs no longer parses {expected}: {options:?}");
    }
    // The usage line the binary prints names only options it parses.
    let usage = run(env!("CARGO_BIN_EXE_gatehouse-agent"), &["--help"]);
    assert!(usage.status.success(), "gatehouse-agent --help failed");
    let unparsed: Vec<_> = long_flags(&String::from_utf8_lossy(&usage.stdout))
        .into_iter()
        .filter(|f| !options.contains(&format!("--{f}")))
        .collect();
    assert!(unparsed.is_empty(), "gatehouse-agent --help names options it does not parse: {unparsed:?}");
    // `--name` is written `Fl -name` in the page, `-x` is `Fl x`.
    let missing: Vec<_> =
        options.iter().filter(|o| !mentions(&page, &format!("Fl {}", o.strip_prefix('-').unwrap_or(o)))).collect();
    assert!(missing.is_empty(), "options missing from man/gatehouse-agent.8: {missing:?}");
    let stale: Vec<_> = documented_flags(&page).into_iter().filter(|f| !options.contains(&format!("--{f}"))).collect();
    assert!(stale.is_empty(), "man/gatehouse-agent.8 documents flags gatehouse-agent lacks: {stale:?}");

    // Every `exit::NAME` it uses has its `.It N` in EXIT STATUS, and nothing more.
    let codes = exit_names(&source);
    let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
    assert!(codes.len() >= 5, "{codes:?}");
    let status = section(&page, "EXIT STATUS");
    let documented: BTreeSet<&str> = status.lines().filter_map(|l| l.strip_prefix(".It ")).collect();
    let missing: Vec<_> = codes.iter().filter(|c| !documented.contains(*c)).collect();
    assert!(missing.is_empty(), "exit codes missing from man/gatehouse-agent.8: {missing:?}");
    let stale: Vec<_> = documented.iter().filter(|c| !codes.contains(c)).collect();
    assert!(stale.is_empty(), "man/gatehouse-agent.8 documents exit codes gatehouse-agent lacks: {stale:?}");

    // The [agent] keys, which gatehouse.toml(5) documents too, are named in the page.
    let keys: Vec<String> = config_keys().into_iter().filter(|k| k.starts_with("agent.")).collect();
    assert!(keys.len() >= 2, "{keys:?}");
    let missing: Vec<_> = keys.iter().filter(|k| !mentions(&page, &format!("Cm {k}"))).collect();
    assert!(missing.is_empty(), "[agent] keys missing from man/gatehouse-agent.8: {missing:?}");
}

/// The string literals on the lines of `text` that start with one of `starts`.
fn literals(text: &str, starts: &[&str]) -> BTreeSet<String> {
    let lines = text.lines().map(str::trim).filter(|l| starts.iter().any(|s| l.starts_with(s)));
    lines.flat_map(|l| l.split('"').skip(1).step_by(2).map(str::to_string).collect::<Vec<_>>()).collect()
}

#[test]
fn pam_module_and_session_pages_document_their_arguments() {
    // pam_gatehouse.so: each argument (and value) ModuleOptions::parse accepts, and each code
    // the shim returns; a panic is PAM_ABORT (pam-bindings' guard).
    let page = read("man/pam_gatehouse.8");
    let account = read("src/session/mod.rs");
    let parse = &account[account.find("pub fn parse").expect("ModuleOptions::parse in src/session/mod.rs")..];
    let words = literals(&parse[..parse.find("\n    }\n").unwrap()], &["Some((", "None if"]);
    assert!(words.contains("config") && words.contains("deny") && words.contains("authfail"), "{words:?}");
    let missing: Vec<_> = words.iter().filter(|w| !mentions(&page, &format!("Cm {w}"))).collect();
    assert!(missing.is_empty(), "module arguments missing from man/pam_gatehouse.8: {missing:?}");
    let shim = read("pam/src/lib.rs");
    let mut codes: BTreeSet<&str> = shim
        .lines()
        .filter_map(|l| l.split_once("=> PamResultCode::").map(|(_, code)| code.trim_end_matches(',')))
        .collect();
    codes.insert("PAM_ABORT");
    assert!(codes.len() >= 8, "{codes:?}");
    let missing: Vec<_> = codes.iter().filter(|c| !page.contains(&format!(".It Dv {c}\n"))).collect();
    assert!(missing.is_empty(), "return codes missing from man/pam_gatehouse.8: {missing:?}");

    // gatehouse-session: its options, the stages it takes from PAM_TYPE, the variables it
    // reads (its own and the module logic's) and its exit codes.
    let page = read("man/gatehouse-session.8");
    let source = read("src/bin/gatehouse-session.rs");
    let flags: BTreeSet<String> =
        literals(&source, &["\"--"]).into_iter().filter_map(|f| f.strip_prefix("--").map(str::to_string)).collect();
    assert!(flags.contains("config") && flags.contains("help"), "{flags:?}");
    let missing: Vec<_> = flags.iter().filter(|f| !mentions(&page, &format!("Fl -{f}"))).collect();
    assert!(missing.is_empty(), "flags missing from man/gatehouse-session.8: {missing:?}");
    let stale: Vec<_> = documented_flags(&page).into_iter().filter(|f| !flags.contains(f)).collect();
    assert!(stale.is_empty(), "man/gatehouse-session.8 documents flags it lacks: {stale:?}");
    for stage in literals(&source, &["Ok(\""]) {
        assert!(mentions(&page, &format!("Cm {stage}")), "gatehouse-session.8 lacks PAM_TYPE {stage}");
    }
    let mut vars = literals(&source, &["std::env::var("]);
    vars.extend(literals(&account, &["let fingerprint = ctx.env("]));
    assert!(vars.contains("PAM_USER") && vars.contains("SSH_AUTH_INFO_0"), "{vars:?}");
    for var in vars {
        assert!(page.contains(&format!(".It Ev {var}\n")), "gatehouse-session.8 lacks {var} in ENVIRONMENT");
    }
    let mut statuses = exit_statuses(&source);
    statuses.insert("0".to_string());
    for status in statuses {
        assert!(page.contains(&format!(".It {status}\n")), "gatehouse-session.8 lacks exit status {status}");
    }
}

#[test]
fn pages_have_their_sections_and_pass_lint() {
    for page in PAGES {
        let text = read(page);
        let mut sections = vec!["NAME", "DESCRIPTION", "FILES", "SEE ALSO"];
        if page.starts_with("man/pam_") {
            // A PAM module has no exit status; its return codes take that place.
            sections.extend(["SYNOPSIS", "RETURN CODES"]);
        } else if page.ends_with(".8") {
            sections.extend(["SYNOPSIS", "EXIT STATUS"]);
        }
        for section in sections {
            let heading = format!(".Sh {section}\n");
            assert!(text.contains(&heading), "{page} lacks {section}");
        }
    }
    // mandoc's lint, else groff's warnings; neither is installed by this test.
    let lints: [(&str, &[&str]); 2] =
        [("mandoc", &["-T", "lint", "-W", "warning"]), ("groff", &["-mandoc", "-Tutf8", "-ww", "-z"])];
    let Some((linter, args)) =
        lints.into_iter().find(|(program, _)| Command::new(program).arg("--version").output().is_ok())
    else {
        // scripts/install-test-deps installs mandoc; CI must not pass without the lint.
        assert!(std::env::var_os("CI").is_none(), "lint needs mandoc or groff, and CI has neither");
        eprintln!("SKIPPED: lint needs mandoc or groff, and neither is installed");
        return;
    };
    for page in PAGES {
        let out = Command::new(linter).args(args).arg(path(page)).output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.is_empty(), "{linter} on {page}:\n{said}");
    }
}
