//! A network namespace of the test's own, joined to the host by a veth pair on a private
//! /30: a "node" whose programs run in it reaches the host only over that link, so taking
//! the link down cuts the node off (as a pulled cable or a partition would) while every
//! other process goes on. Removed, with its link, on drop. Needs root and `ip` (iproute2).
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};

pub struct Netns {
    pub name: String,
    /// The host's end of the link.
    host_if: String,
    /// The host's address on the link: what the node connects to.
    pub host_addr: Ipv4Addr,
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).stdin(Stdio::null()).output().unwrap()
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Netns {
    /// `None` when `ip` is not installed. Names and addresses come from this process's pid,
    /// so parallel test binaries do not meet.
    pub fn new(tag: &str) -> Option<Netns> {
        if Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            return None;
        }
        let pid = std::process::id();
        let name = format!("{tag}{pid}");
        let (host_if, node_if) = (format!("gh{pid}h"), format!("gh{pid}n"));
        // 10.231.0.0/16 in /30 blocks: .1 the host, .2 the node.
        let block = (pid % 16_384) * 4;
        let (hi, lo) = ((block >> 8) as u8, (block & 0xff) as u8);
        let host_addr = Ipv4Addr::new(10, 231, hi, lo + 1);
        let node_addr = Ipv4Addr::new(10, 231, hi, lo + 2);
        ip_ok(&["netns", "add", &name]);
        let ns = Netns { name, host_if, host_addr };
        ip_ok(&["link", "add", &ns.host_if, "type", "veth", "peer", "name", &node_if]);
        ip_ok(&["link", "set", &node_if, "netns", &ns.name]);
        ip_ok(&["addr", "add", &format!("{host_addr}/30"), "dev", &ns.host_if]);
        ip_ok(&["link", "set", &ns.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip_ok(&all);
        };
        inside(&["addr", "add", &format!("{node_addr}/30"), "dev", &node_if]);
        inside(&["link", "set", &node_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        Some(ns)
    }

    /// The link's network, for an allow rule (pg_hba.conf).
    pub fn network(&self) -> String {
        let [a, b, c, d] = self.host_addr.octets();
        format!("{a}.{b}.{c}.{}/30", d - 1)
    }

    /// Takes the link down (`false`: the node is cut off) or up again.
    pub fn link(&self, up: bool) {
        ip_ok(&["link", "set", &self.host_if, if up { "up" } else { "down" }]);
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the node's end, and the pair with it.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}
