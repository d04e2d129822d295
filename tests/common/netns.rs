//! Tests: pods as network namespaces — whether this process may make them (root, `ip`,
//! `iptables`), a namespace guard deleted on drop, commands run inside one (as another uid),
//! a veth link between two or a bridge joining many, and the nat rules Istio's init container
//! installs.
use std::{
    io::Write,
    process::{Command, Stdio},
};

use super::{skip, Missing};

/// Istio's sidecar uid: its connections are not redirected.
pub const PROXY_UID: u32 = 1337;
/// The uid the pods' applications run as (`nobody`).
pub const APP_UID: u32 = 65534;

/// Whether this process may make namespaces and iptables rules (root, the tools present);
/// says why not (a missing peer: fails under CI) when it may not.
pub fn can_intercept(test: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let tools = [
        ("ip", "-V"),
        ("iptables", "--version"),
        ("setpriv", "--version"),
    ]
    .iter()
    .all(|(tool, flag)| {
        Command::new(tool)
            .arg(flag)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !(root && tools) {
        skip(
            test,
            "needs root and the ip, iptables and setpriv tools (network namespaces)",
            Missing::Peer,
        );
        return false;
    }
    true
}

/// Runs `ip args…`; panics naming the arguments when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with its loopback up; deleted when dropped (after the processes
/// started in it, which their own guards stop first).
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `sp-<tag>-<pid>` (keep `tag` short: the kernel allows 15-character names elsewhere).
    pub fn new(tag: &str) -> Netns {
        let name = format!("sp-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// `program` run inside the namespace (as root).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// `program` run inside the namespace as `uid` (its group too, no supplementary groups).
    pub fn command_as(&self, uid: u32, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, "setpriv"])
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .args(["--clear-groups", "--", program]);
        c
    }

    /// Links this namespace's `eth0` (address `ip_cidr`) to `peer`'s `eth0` (`peer_cidr`) by a
    /// veth pair, both up.
    pub fn link(&self, ip_cidr: &str, peer: &Netns, peer_cidr: &str) {
        ip(&[
            "-n", &self.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
            "netns", &peer.name,
        ]);
        for (ns, cidr) in [(self, ip_cidr), (peer, peer_cidr)] {
            ip(&["-n", &ns.name, "addr", "add", cidr, "dev", "eth0"]);
            ip(&["-n", &ns.name, "link", "set", "eth0", "up"]);
        }
    }

    /// Makes bridge `br0` in this namespace with address `cidr`, up: the node's network the
    /// pods of [`Netns::join`] share.
    pub fn bridge(&self, cidr: &str) {
        ip(&["-n", &self.name, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &self.name, "addr", "add", cidr, "dev", "br0"]);
        ip(&["-n", &self.name, "link", "set", "br0", "up"]);
    }

    /// Joins this namespace to `node`'s bridge: a veth pair, this side `eth0` with address
    /// `cidr`, the node's side `port` (a unique name) on `br0`; every address not on the
    /// bridge's network is routed via the node's `gateway` address, as a pod's default route.
    pub fn join(&self, node: &Netns, port: &str, cidr: &str, gateway: &str) {
        ip(&[
            "-n", &self.name, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns",
            &node.name,
        ]);
        ip(&["-n", &node.name, "link", "set", port, "master", "br0"]);
        ip(&["-n", &node.name, "link", "set", port, "up"]);
        ip(&["-n", &self.name, "addr", "add", cidr, "dev", "eth0"]);
        ip(&["-n", &self.name, "link", "set", "eth0", "up"]);
        ip(&["-n", &self.name, "route", "add", "default", "via", gateway]);
    }

    /// Installs the nat rules Istio's init container (istio-iptables, REDIRECT mode, every
    /// inbound port but `inbound_excluded`, every outbound address) writes, in one
    /// `iptables-restore` as it does.
    pub fn istio_iptables(&self, inbound_excluded: &[u16]) {
        let rules = istio_nat_rules(inbound_excluded);
        let mut child = self
            .command("iptables-restore")
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run iptables-restore");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "iptables-restore in {}: {}\n{rules}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The nat table of a sidecar pod, as istio-iptables builds it (our wording of its rules):
/// inbound TCP to any port but the excluded ones goes to the proxy's 15006, outbound TCP to
/// 15001; the proxy's own connections (uid 1337) leave untouched, except those over loopback
/// to a pod address (the app calling itself through its service: back in as inbound); the
/// inbound passthrough's connections from 127.0.0.6 over loopback leave untouched; the app's
/// loopback traffic and anything to 127.0.0.1 is not intercepted.
fn istio_nat_rules(inbound_excluded: &[u16]) -> String {
    let uid = PROXY_UID;
    let mut r = vec![
        "*nat".to_string(),
        ":ISTIO_INBOUND - [0:0]".into(),
        ":ISTIO_IN_REDIRECT - [0:0]".into(),
        ":ISTIO_OUTPUT - [0:0]".into(),
        ":ISTIO_REDIRECT - [0:0]".into(),
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001".into(),
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006".into(),
        "-A PREROUTING -p tcp -j ISTIO_INBOUND".into(),
        // HBONE (15008) and Envoy's own ports are never redirected inbound.
        "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN".into(),
    ];
    r.extend(
        inbound_excluded
            .iter()
            .map(|p| format!("-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN")),
    );
    r.extend([
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".to_string(),
        "-A OUTPUT -j ISTIO_OUTPUT".into(),
        "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN".into(),
        format!(
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner \
             --uid-owner {uid} -j ISTIO_IN_REDIRECT"
        ),
        format!("-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN"),
        format!("-A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN"),
        format!(
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner \
             --gid-owner {uid} -j ISTIO_IN_REDIRECT"
        ),
        format!("-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {uid} -j RETURN"),
        format!("-A ISTIO_OUTPUT -m owner --gid-owner {uid} -j RETURN"),
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN".into(),
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT".into(),
        "COMMIT".into(),
    ]);
    r.join("\n") + "\n"
}
