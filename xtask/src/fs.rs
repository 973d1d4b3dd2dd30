//! Files written whole: a temporary file beside the target, then a rename, so a reader
//! never sees half a file; and only when the content changes, so an unchanged file
//! keeps its time (and what watches it sees nothing).

use std::path::Path;

use anyhow::{Context, Result};

/// Replace a file whole (temporary file + rename), only when its content changes.
pub fn write_if_changed(path: &Path, content: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|c| c == content) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
