//! Network faults: every home in its own network namespace, joined by a bridge in a hub
//! namespace, so nftables rules inside a home's namespace can cut it off from part of the
//! neighbourhood or drop a share of its packets. Nothing touches the machine's own interfaces
//! or ruleset; the namespaces go away when the testnet stops.
//!
//! Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN), `ip` (iproute2) and `nft` (nftables).

use anyhow::{Context, bail};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The namespaces of one testnet run.
#[derive(Debug)]
pub struct Namespaces {
    prefix: String,
    homes: usize,
    /// Per home: the homes it is cut off from, and the share of packets it drops (percent).
    state: Vec<(Vec<usize>, u8)>,
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args))
}

/// Says why this machine cannot run network faults, if it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        return Some("network faults need root (network namespaces and nftables)".into());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!(
                "network faults need `{tool}` (Debian: apt-get install iproute2 nftables)"
            ));
        }
    }
    None
}

impl Namespaces {
    /// Creates a hub namespace with a bridge and one namespace per home, each with a veth
    /// link to the bridge and the address [`Namespaces::addr`].
    pub fn create(homes: usize) -> anyhow::Result<Namespaces> {
        if let Some(why) = unavailable() {
            bail!("{why}");
        }
        anyhow::ensure!(homes <= 60_000, "too many homes for one /16");
        let ns = Namespaces {
            prefix: format!("wmt{}", std::process::id()),
            homes,
            state: vec![(Vec::new(), 0); homes],
        };
        let hub = ns.hub();
        ip(&["netns", "add", &hub]).context("this machine does not allow network namespaces")?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 0..homes {
            let name = ns.name(i);
            let port = format!("vh{i}");
            ip(&["netns", "add", &name])?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &name,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            let cidr = format!("{}/16", ns.addr(i));
            ip(&["-n", &name, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &name, "link", "set", "eth0", "up"])?;
        }
        Ok(ns)
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    /// Home `i`'s namespace.
    pub fn name(&self, i: usize) -> String {
        format!("{}-h{i}", self.prefix)
    }

    /// Home `i`'s address: 10.77.0.2 and up.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        let n = i + 2;
        Ipv4Addr::new(10, 77, (n / 256) as u8, (n % 256) as u8)
    }

    /// A command that runs `program` inside home `i`'s namespace (`ip netns exec` replaces
    /// itself with the program, so the child's pid is the program's).
    pub fn command(&self, i: usize, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name(i)]).arg(program);
        c
    }

    /// Cuts the homes in `a` off from those in `b` (both ways).
    pub fn partition(&mut self, a: &[usize], b: &[usize]) -> anyhow::Result<()> {
        for &i in a {
            self.state[i].0.extend_from_slice(b);
        }
        for &i in b {
            self.state[i].0.extend_from_slice(a);
        }
        for i in a.iter().chain(b) {
            self.apply(*i)?;
        }
        Ok(())
    }

    /// Heals every partition.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        for i in 0..self.homes {
            if !self.state[i].0.is_empty() {
                self.state[i].0.clear();
                self.apply(i)?;
            }
        }
        Ok(())
    }

    /// Makes home `i` drop `percent` % of the packets it receives and sends (0: none).
    pub fn loss(&mut self, i: usize, percent: u8) -> anyhow::Result<()> {
        self.state[i].1 = percent.min(100);
        self.apply(i)
    }

    /// Writes home `i`'s ruleset (one table, replaced whole).
    fn apply(&self, i: usize) -> anyhow::Result<()> {
        let (cut, loss) = &self.state[i];
        let mut input = String::new();
        let mut output = String::new();
        if !cut.is_empty() {
            let mut addrs: Vec<String> = cut.iter().map(|&j| self.addr(j).to_string()).collect();
            addrs.sort();
            addrs.dedup();
            let set = addrs.join(", ");
            input.push_str(&format!("    ip saddr {{ {set} }} drop\n"));
            output.push_str(&format!("    ip daddr {{ {set} }} drop\n"));
        }
        if *loss > 0 {
            let rule = if *loss >= 100 {
                "    iifname \"eth0\" drop\n".to_string()
            } else {
                format!("    iifname \"eth0\" numgen random mod 100 < {loss} drop\n")
            };
            input.push_str(&rule);
            output.push_str(&rule.replace("iifname", "oifname"));
        }
        let script = format!(
            "table inet wattmesh_testnet\ndelete table inet wattmesh_testnet\n\
             table inet wattmesh_testnet {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n{input}  }}\n  \
             chain output {{\n    type filter hook output priority 0; policy accept;\n{output}  }}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name(i), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft")?;
        use std::io::Write;
        child
            .stdin
            .take()
            .context("nft's input")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in {} failed: {}",
                self.name(i),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a home's namespace deletes its veth pair too.
        for i in 0..self.homes {
            let _ = ip(&["netns", "del", &self.name(i)]);
        }
        let _ = ip(&["netns", "del", &self.hub()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_and_skip_the_network_address() {
        let ns = Namespaces {
            prefix: "x".into(),
            homes: 0,
            state: Vec::new(),
        };
        assert_eq!(ns.addr(0), Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(ns.addr(254), Ipv4Addr::new(10, 77, 1, 0));
        assert_ne!(ns.addr(253), ns.addr(254));
    }

    /// Two namespaces, a partition and its healing, seen through TCP connections.
    #[test]
    fn a_partition_cuts_and_heals() {
        if let Some(why) = unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
        let mut ns = Namespaces::create(2).unwrap();
        let reach = |ns: &Namespaces| {
            // A listener in home 1, a connection attempt from home 0 with a short timeout.
            let addr = ns.addr(1).to_string();
            let mut server = Command::new("ip")
                .args(["netns", "exec", &ns.name(1), "python3", "-c"])
                .arg(format!(
                    "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('{addr}',24999));s.listen();s.settimeout(5);c,_=s.accept();c.close()"
                ))
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            let ok = Command::new("ip")
                .args(["netns", "exec", &ns.name(0), "python3", "-c"])
                .arg(format!(
                    "import socket;socket.create_connection(('{addr}',24999),timeout=1)"
                ))
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            let _ = server.kill();
            let _ = server.wait();
            ok
        };
        assert!(reach(&ns), "homes in namespaces reach each other");
        ns.partition(&[0], &[1]).unwrap();
        assert!(!reach(&ns), "a partition cuts them off");
        ns.heal().unwrap();
        assert!(reach(&ns), "healing restores the link");
        ns.loss(0, 100).unwrap();
        assert!(!reach(&ns), "100 % loss drops everything");
    }
}
