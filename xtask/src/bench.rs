//! Benchmarks (filled in separately).
pub fn main(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("no benchmarks yet")
}
