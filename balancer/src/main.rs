//! `balancer`: the daemon and its CLI.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("balancer: not implemented yet")
}
