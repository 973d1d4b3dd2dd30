//! Files written whole: a temporary file beside the target, then a rename, so a reader
//! never sees half a file; and only when the content changes, so an unchanged file
//! keeps its time (and what watches it sees nothing).

use std::path::Path;

use anyhow::{Context, Result};

/// Replace a file whole (temporary file + rename), only when its content changes. Only a
/// regular file is replaced: a rename over a device (`/dev/null`), a pipe or a directory
/// would put a file in its place, so that is refused, naming it.
pub fn write_if_changed(path: &Path, content: &str) -> Result<()> {
    if let Ok(meta) = std::fs::metadata(path)
        && !meta.is_file()
    {
        anyhow::bail!(
            "{} is not a regular file (a device, a pipe or a directory): it is not replaced; give the path of a file",
            path.display()
        );
    }
    if std::fs::read_to_string(path).is_ok_and(|c| c == content) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_is_replaced() {
        let dir = std::env::temp_dir().join(format!("slipway-fs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.txt");
        write_if_changed(&file, "one\n").unwrap();
        write_if_changed(&file, "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "two\n");
        // A device stays what it is: the write is refused, named.
        let err = write_if_changed(Path::new("/dev/null"), "x").unwrap_err().to_string();
        assert!(err.contains("/dev/null is not a regular file"), "{err}");
        assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
        let err = write_if_changed(&dir, "x").unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
