//! A throwaway OpenLDAP server (Debian's `slapd`) on loopback ports, for the directory
//! tests: a generated slapd.conf (tests/common/slapd.conf.in) with the core, cosine, nis
//! and inetorgperson schemas, the OpenSSH LPK schema and the account-state attributes of
//! other servers (tests/common/ldap-test.schema), an mdb database in a fresh folder, a
//! root DN to load data, and a service account that may read everything but passwords.
//! `start_tls` adds a test CA, a server certificate for 127.0.0.1 and localhost, and an
//! ldaps:// port. The server runs in the foreground and is killed on drop.
//!
//! Included by tests/e2e_ldap.rs as `mod slapd` beside `mod common`. Needs root (the
//! service password file must be root's) and the slapd and ldap-utils packages.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use crate::common::{free_port, TestDir};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BASE_DN: &str = "dc=gatehouse,dc=test";
pub const ADMIN_DN: &str = "cn=admin,dc=gatehouse,dc=test";
pub const ADMIN_PW: &str = "admin-secret";
pub const SERVICE_DN: &str = "cn=gatehouse,ou=services,dc=gatehouse,dc=test";
pub const SERVICE_PW: &str = "service-secret";

const CONF_TEMPLATE: &str = include_str!("slapd.conf.in");
const SCHEMA: &str = include_str!("ldap-test.schema");

/// The password every test user gets: `{uid}-pw`.
pub fn password_of(uid: &str) -> String {
    format!("{uid}-pw")
}

pub fn user_dn(uid: &str, ou: &str) -> String {
    format!("uid={uid},ou={ou},{BASE_DN}")
}

/// The test CA, a second CA that signed nothing, and the ldaps:// URL.
pub struct Tls {
    pub ca: PathBuf,
    pub wrong_ca: PathBuf,
    pub port: u16,
    pub url: String,
}

pub struct Slapd {
    child: Option<Child>,
    pub dir: TestDir,
    /// The plain ldap:// port (StartTLS offered there too when TLS is on).
    pub port: u16,
    pub url: String,
    pub tls: Option<Tls>,
    /// slapd's own log (`-d 256`: connections, binds, searches and their filters).
    pub log: PathBuf,
    /// The service account's password, root's and mode 0600, for `ldap.bind_password_file`.
    pub password_file: PathBuf,
    conf: PathBuf,
}

fn ok(cmd: &mut Command, input: &[u8]) -> Output {
    let what = format!("{cmd:?}");
    let out = super::output_with_input(cmd, input);
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn need(program: &str) {
    assert!(
        Path::new(program).exists(),
        "{program} is missing: apt-get install slapd ldap-utils (.ci/run installs them)"
    );
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it, plus a second
/// CA that signed nothing.
pub fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        ok(Command::new("openssl").args(args).current_dir(dir), b"");
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    for (name, cn) in [("ca", "Gatehouse test CA"), ("wrong-ca", "Some other CA")] {
        let key = format!("{name}.key");
        let cert = format!("{name}.pem");
        let subject = format!("/CN={cn}");
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &cert, "-days", "2", "-subj", &subject]);
        args.extend([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&args);
    }
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]);
    openssl(&args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
}

/// The tree every instance starts with: the suffix, the branches, the service account.
fn base_ldif() -> String {
    let mut text = format!(
        "dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\no: Gatehouse tests\ndc: gatehouse\n\n"
    );
    for ou in ["people", "contractors", "groups", "services"] {
        text.push_str(&format!("dn: ou={ou},{BASE_DN}\nobjectClass: organizationalUnit\nou: {ou}\n\n"));
    }
    text.push_str(&format!(
        "dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
         cn: gatehouse\nuserPassword: {SERVICE_PW}\n\n"
    ));
    text
}

impl Slapd {
    /// Plain ldap:// only.
    pub fn start() -> Slapd {
        Slapd::start_with(false, false)
    }

    /// ldaps:// on a second port, and StartTLS on the ldap:// one.
    pub fn start_tls() -> Slapd {
        Slapd::start_with(true, false)
    }

    /// Plain ldap:// with the syncprov overlay: RFC 4533 content sync offered.
    pub fn start_syncprov() -> Slapd {
        Slapd::start_with(false, true)
    }

    fn start_with(tls: bool, syncprov: bool) -> Slapd {
        need("/usr/sbin/slapd");
        need("/usr/bin/ldapadd");
        let dir = TestDir::new("slapd");
        let d = dir.path.display().to_string();
        std::fs::write(dir.join("ldap-test.schema"), SCHEMA).unwrap();
        let tls_lines = if tls {
            make_certificates(&dir.path);
            format!(
                "TLSCACertificateFile {d}/ca.pem\nTLSCertificateFile {d}/server.pem\nTLSCertificateKeyFile {d}/server.key"
            )
        } else {
            String::new()
        };
        let conf = dir.join("slapd.conf");
        let (module, overlay) = if syncprov {
            ("moduleload syncprov", "index entryCSN,entryUUID eq\noverlay syncprov\nsyncprov-checkpoint 100 1")
        } else {
            ("", "")
        };
        let text = CONF_TEMPLATE
            .replace("@DIR@", &d)
            .replace("@TLS@", &tls_lines)
            .replace("@SYNCPROV_MODULE@", module)
            .replace("@SYNCPROV_OVERLAY@", overlay);
        std::fs::write(&conf, text).unwrap();
        std::fs::create_dir(dir.join("db")).unwrap();
        // slapadd reads LDIF from standard input when given no -l.
        ok(Command::new("/usr/sbin/slapadd").arg("-q").arg("-f").arg(&conf), base_ldif().as_bytes());

        let password_file = dir.join("service.pw");
        std::fs::write(&password_file, format!("{SERVICE_PW}\n")).unwrap();
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();

        let mut slapd = Slapd {
            child: None,
            log: dir.join("slapd.log"),
            dir,
            port: 0,
            url: String::new(),
            tls: None,
            password_file,
            conf,
        };
        // A port picked free may be taken before slapd binds it; try a few.
        for _ in 0..5 {
            slapd.port = free_port();
            slapd.url = format!("ldap://127.0.0.1:{}/", slapd.port);
            slapd.tls = tls.then(|| {
                let port = free_port();
                Tls {
                    ca: slapd.dir.join("ca.pem"),
                    wrong_ca: slapd.dir.join("wrong-ca.pem"),
                    port,
                    url: format!("ldaps://127.0.0.1:{port}/"),
                }
            });
            if slapd.spawn() {
                return slapd;
            }
        }
        panic!("slapd did not start: {}", slapd.log_text());
    }

    fn ports(&self) -> Vec<u16> {
        let mut ports = vec![self.port];
        ports.extend(self.tls.as_ref().map(|t| t.port));
        ports
    }

    /// Starts slapd on this instance's ports; false if it exited (a port was taken).
    fn spawn(&mut self) -> bool {
        let mut urls = self.url.clone();
        if let Some(t) = &self.tls {
            urls = format!("{urls} {}", t.url);
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(&self.conf)
            .args(["-h", &urls, "-d", "256"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            if self.ports().iter().all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok()) {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Kills the server: the directory is down.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.stop();
        assert!(self.spawn(), "slapd did not restart: {}", self.log_text());
    }

    fn admin(&self, program: &str, ldif: &str) -> Output {
        ok(Command::new(program).args(["-x", "-H", &self.url, "-D", ADMIN_DN, "-w", ADMIN_PW]), ldif.as_bytes())
    }

    /// ldapadd as the root DN.
    pub fn add(&self, ldif: &str) {
        self.admin("/usr/bin/ldapadd", ldif);
    }

    /// ldapmodify as the root DN (the LDIF carries its own `changetype`).
    pub fn modify(&self, ldif: &str) {
        self.admin("/usr/bin/ldapmodify", ldif);
    }

    pub fn delete(&self, dn: &str) {
        ok(Command::new("/usr/bin/ldapdelete").args(["-x", "-H", &self.url, "-D", ADMIN_DN, "-w", ADMIN_PW, dn]), b"");
    }

    /// `(dn, modifyTimestamp)` of every entry `filter` matches, read as the root DN.
    pub fn modify_timestamps(&self, filter: &str) -> Vec<(String, String)> {
        let out = ok(
            Command::new("/usr/bin/ldapsearch").args([
                "-LLL",
                "-o",
                "ldif-wrap=no",
                "-x",
                "-H",
                &self.url,
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PW,
                "-b",
                BASE_DN,
                filter,
                "modifyTimestamp",
            ]),
            b"",
        );
        let text = String::from_utf8(out.stdout).unwrap();
        text.split("\n\n")
            .filter_map(|entry| {
                let dn = entry.lines().find_map(|l| l.strip_prefix("dn: "))?;
                let ts = entry.lines().find_map(|l| l.strip_prefix("modifyTimestamp: "))?;
                Some((dn.to_string(), ts.to_string()))
            })
            .collect()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `attr: value`, or `attr:: base64` for a value LDIF cannot carry as it is (line breaks,
/// NUL, non-ASCII, a leading space, colon or `<`, a trailing space).
pub fn ldif_line(attr: &str, value: &[u8]) -> String {
    let safe = !value.is_empty()
        && value.iter().all(|b| (0x20..0x7f).contains(b))
        && !matches!(value[0], b' ' | b':' | b'<')
        && value.last() != Some(&b' ');
    if safe {
        format!("{attr}: {}\n", String::from_utf8_lossy(value))
    } else {
        format!("{attr}:: {}\n", <base64ct::Base64 as base64ct::Encoding>::encode_string(value))
    }
}

/// A person under `ou=OU`: posixAccount with `uidNumber`, password `{uid}-pw`, each of
/// `keys` as an sshPublicKey value, then `extra` attribute lines as they are.
pub fn user_ldif(uid: &str, ou: &str, uid_number: u32, keys: &[&str], extra: &str) -> String {
    let mut text = format!(
        "dn: {}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\nobjectClass: shadowAccount\n\
         objectClass: ldapPublicKey\nobjectClass: gatehouseTestAccount\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
         uidNumber: {uid_number}\ngidNumber: {uid_number}\nhomeDirectory: /home/{uid}\nuserPassword: {}\n",
        user_dn(uid, ou),
        password_of(uid)
    );
    for key in keys {
        text.push_str(&ldif_line("sshPublicKey", key.as_bytes()));
    }
    text.push_str(extra);
    text.push('\n');
    text
}

/// A posixGroup under ou=groups with `members` as memberUid values.
pub fn group_ldif(cn: &str, gid: u32, members: &[&str]) -> String {
    let mut text = format!("dn: cn={cn},ou=groups,{BASE_DN}\nobjectClass: posixGroup\ncn: {cn}\ngidNumber: {gid}\n");
    for m in members {
        text.push_str(&format!("memberUid: {m}\n"));
    }
    text.push('\n');
    text
}
