//! The lab's DNS server: dnsmasq serving the `.test` zone (MX and address records) on the
//! DNS host's address, in the foreground so that its guard owns it.

use crate::netns::Netns;
use crate::proc::ChildGuard;
use anyhow::Result;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// One mail domain: its MX host name and that host's addresses.
pub struct MailDomain {
    pub domain: String,
    pub mx_host: String,
    pub addr4: Ipv4Addr,
    pub addr6: Ipv6Addr,
}

/// The lab's mail domains: `{isp}.test` with MX `mx1.{isp}.test` on each ISP host.
pub fn lab_domains(lab: &crate::topo::Lab) -> Vec<MailDomain> {
    lab.isps
        .iter()
        .zip(crate::topo::ISP_NAMES)
        .map(|(h, name)| MailDomain {
            domain: format!("{name}.test"),
            mx_host: format!("mx1.{name}.test"),
            addr4: h.addr4(),
            addr6: h.addr6(),
        })
        .collect()
}

/// Starts dnsmasq in `ns`, listening on `listen` only, answering from `domains` and
/// refusing to forward anything (no upstream, no /etc/hosts, no resolv.conf).
pub fn start(
    ns: &Netns,
    listen: Ipv4Addr,
    domains: &[MailDomain],
    log: &Path,
) -> Result<ChildGuard> {
    let mut cmd = ns.command("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--no-poll",
        "--bind-interfaces",
        "--user=root",
        "--pid-file=",
        "--log-queries",
        "--log-facility=-",
        "--local=/test/",
        "--conf-file=/dev/null",
    ]);
    cmd.arg(format!("--listen-address={listen}"));
    for d in domains {
        cmd.arg(format!("--mx-host={},{},10", d.domain, d.mx_host));
        cmd.arg(format!(
            "--host-record={},{},{}",
            d.mx_host, d.addr4, d.addr6
        ));
    }
    ChildGuard::spawn("dnsmasq", cmd, Some(log))
}
