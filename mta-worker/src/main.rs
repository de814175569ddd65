fn main() -> anyhow::Result<()> {
    anyhow::bail!("mta-worker: not implemented yet")
}
