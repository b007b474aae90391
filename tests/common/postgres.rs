//! A throwaway PostgreSQL server (Debian's `postgresql`) on a loopback port, for the
//! tests of several login nodes: `initdb` in a fresh folder as the `postgres` account,
//! the server in the foreground with a private socket folder, a role `gatehouse` with a
//! password (SCRAM over TCP) owning a database `gatehouse`, and the password in a file of
//! root's, mode 0600, for `source.password_file`. Stopped and removed on drop.
//!
//! Included by tests/e2e_source.rs as `mod postgres` beside `mod common`. Needs root.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use crate::common::{free_port, TestDir};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "gatehouse-pg-secret";

/// The folder of Debian's PostgreSQL programs (`/usr/lib/postgresql/N/bin`), if installed.
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

pub struct Postgres {
    child: Option<Child>,
    pub dir: TestDir,
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    pub log: PathBuf,
    /// The password of role `gatehouse`, root's and mode 0600.
    pub password_file: PathBuf,
    /// Server settings beyond the harness's own (`-c name=value`).
    extra: Vec<String>,
    cert_dir: Option<TestDir>,
}

fn as_postgres(program: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

impl Postgres {
    /// `None` when PostgreSQL is not installed.
    pub fn start() -> Option<Postgres> {
        Postgres::start_with(&[])
    }

    /// With TLS: `server.pem` and `server.key` from `certs` (see slapd.rs's
    /// make_certificates), copied for the postgres account.
    pub fn start_tls(certs: &std::path::Path) -> Option<Postgres> {
        bin_dir()?;
        let dir = TestDir::new("pgtls");
        for f in ["server.pem", "server.key"] {
            std::fs::copy(certs.join(f), dir.join(f)).unwrap();
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
            Command::new("chown").args(["postgres:postgres", dir.join(f).to_str().unwrap()]).status().unwrap();
        }
        let cert = format!("ssl_cert_file={}", dir.join("server.pem").display());
        let key = format!("ssl_key_file={}", dir.join("server.key").display());
        let mut pg = Postgres::start_with(&["ssl=on", &cert, &key])?;
        pg.cert_dir = Some(dir);
        Some(pg)
    }

    fn start_with(extra: &[&str]) -> Option<Postgres> {
        let bin = bin_dir()?;
        let dir = TestDir::new("pg");
        let data = dir.join("data");
        let socket = dir.join("socket");
        for d in [&data, &socket] {
            std::fs::create_dir(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
            Command::new("chown").args(["postgres:postgres", d.to_str().unwrap()]).status().unwrap();
        }
        let pwfile = dir.join("initdb-pw");
        std::fs::write(&pwfile, "superuser-secret\n").unwrap();
        Command::new("chown").args(["postgres:postgres", pwfile.to_str().unwrap()]).status().unwrap();
        let out = as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--pwfile",
                pwfile.to_str().unwrap(),
                "-E",
                "UTF8",
                "--no-instructions",
            ],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let log = dir.join("postgres.log");
        let password_file = dir.join("pg-password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut pg =
            Postgres { child: None, dir, port: free_port(), bin, data, log, password_file, extra, cert_dir: None };
        pg.run();
        pg.psql(&format!("CREATE ROLE gatehouse LOGIN PASSWORD '{PASSWORD}'"));
        pg.psql("CREATE DATABASE gatehouse OWNER gatehouse");
        Some(pg)
    }

    /// A hot standby of this server on a loopback port of its own: `pg_basebackup -R -X
    /// stream` over the private socket (the postgres account's peer authentication), then
    /// started; it follows by streaming replication, read-only, and `NOTIFY` does not
    /// reach its clients. Role `gatehouse` and its password come with the copy.
    pub fn standby(&self) -> Postgres {
        let dir = TestDir::new("pgstandby");
        let data = dir.join("data");
        let socket = dir.join("socket");
        for d in [&data, &socket] {
            std::fs::create_dir(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
            Command::new("chown").args(["postgres:postgres", d.to_str().unwrap()]).status().unwrap();
        }
        let (primary_socket, port) = (self.dir.join("socket"), self.port.to_string());
        let out = as_postgres(
            &self.bin.join("pg_basebackup"),
            &[
                "-h",
                primary_socket.to_str().unwrap(),
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
            ],
        );
        assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));
        let password_file = dir.join("pg-password");
        std::fs::copy(&self.password_file, &password_file).unwrap();
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let log = dir.join("postgres.log");
        let mut standby = Postgres {
            child: None,
            dir,
            port: free_port(),
            bin: self.bin.clone(),
            data,
            log,
            password_file,
            extra: Vec::new(),
            cert_dir: None,
        };
        standby.run();
        standby
    }

    /// Starts the server (again, after [`Postgres::stop`]) and waits for its port.
    pub fn run(&mut self) {
        let logfile = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        Command::new("chown").args(["postgres:postgres", self.log.to_str().unwrap()]).status().unwrap();
        let socket = self.dir.join("socket");
        let child = Command::new("setpriv")
            .args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"])
            .arg(self.bin.join("postgres"))
            .args(["-D", self.data.to_str().unwrap(), "-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", &format!("unix_socket_directories={}", socket.display())])
            .args(["-c", "fsync=off"])
            .args(self.extra.iter().flat_map(|e| ["-c", e.as_str()]))
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().unwrap())
            .stderr(logfile)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && as_postgres(
                    &self.bin.join("pg_isready"),
                    &["-h", socket.to_str().unwrap(), "-p", &self.port.to_string()],
                )
                .status
                .success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("postgres did not start: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// Stops the server (fast shutdown: clients are disconnected).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT);
            let _ = child.wait();
        }
    }

    /// Runs SQL as the superuser over the private socket.
    pub fn psql(&self, sql: &str) -> String {
        self.sql_in("postgres", sql)
    }

    /// SQL in the `gatehouse` database.
    pub fn query(&self, sql: &str) -> String {
        self.sql_in("gatehouse", sql)
    }

    /// `sql` in `database`, as the superuser over the private socket; its output.
    fn sql_in(&self, database: &str, sql: &str) -> String {
        let socket = self.dir.join("socket");
        let port = self.port.to_string();
        let args = ["-h", socket.to_str().unwrap(), "-p", &port, "-d", database, "-v", "ON_ERROR_STOP=1", "-Atc", sql];
        let out = as_postgres(&self.bin.join("psql"), &args);
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The `[source]` section for a node of this server.
    pub fn source_config(&self, staleness_max: &str) -> String {
        self.source_config_at("127.0.0.1", staleness_max, "")
    }

    /// The `[source]` section for a node that reaches this server at `host` (after
    /// [`Postgres::also_listen`]); `extra` adds keys (`insecure = true` off loopback).
    pub fn source_config_at(&self, host: &str, staleness_max: &str, extra: &str) -> String {
        format!(
            "\n[source]\nurl = \"postgresql://gatehouse@{host}:{}/gatehouse\"\npassword_file = \"{}\"\n\
             staleness_max = \"{staleness_max}\"\npoll_interval_ms = 500\ntimeout_ms = 2000\n{extra}",
            self.port,
            self.password_file.display()
        )
    }

    /// Listens on `addr` too (besides loopback), and lets role `gatehouse` in from
    /// `network` with its password; restarts the server.
    pub fn also_listen(&mut self, addr: &str, network: &str) {
        let hba = self.data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).unwrap();
        rules.push_str(&format!("host gatehouse gatehouse {network} scram-sha-256\n"));
        std::fs::write(&hba, rules).unwrap();
        // The last `-c` of a setting wins over the harness's own.
        self.extra.push(format!("listen_addresses=127.0.0.1,{addr}"));
        self.stop();
        self.run();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
