//! `drehkreuz demo`: the newcomer's first command (being extended as capabilities land).

use std::path::Path;

pub async fn run(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    Ok(())
}
