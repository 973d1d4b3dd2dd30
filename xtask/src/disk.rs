//! Free space, checked before anything is written: `build` and `dev` refuse to start on
//! a nearly full disk (a build that runs out of space fails part-way, with an error far
//! from its cause), and `doctor` reports the same places with the same limits.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// A place a command writes to, and how much room it needs there.
#[derive(Debug, Clone)]
pub struct Place {
    pub path: PathBuf,
    /// What the place is, in the user's words.
    pub what: &'static str,
    pub min_gib: f64,
}

impl Place {
    /// The checkout's state directory: the bootstrap tarball, staged build contexts,
    /// certificates and stamps.
    pub fn state(dir: &Path) -> Place {
        Place {
            path: dir.to_owned(),
            what: "the state directory",
            min_gib: 1.0,
        }
    }

    /// The engine's data root: images, containers, volumes and the build cache.
    pub fn engine(dir: &Path) -> Place {
        Place {
            path: dir.to_owned(),
            what: "the Docker engine's data root",
            min_gib: 5.0,
        }
    }

    /// Free space at the place (at its nearest existing parent when it does not exist
    /// yet), in GiB; `None` when it cannot be read.
    pub fn free_gib(&self) -> Option<f64> {
        let existing = self.path.ancestors().find(|p| p.exists())?;
        free_gib(existing)
    }

    /// How to make room here.
    pub fn fix(&self) -> &'static str {
        if self.what == Place::engine(Path::new("")).what {
            "`docker system prune` removes stopped containers, unused images and the build cache; \
             `docker buildx prune` the build cache alone"
        } else {
            "free space on that filesystem (`cargo xtask bootstrap` makes the root image's tarball again \
             when .slipway/build is removed), or point SLIPWAY_STATE_DIR elsewhere"
        }
    }
}

/// Every place with less than its minimum free, each named with its free space and fix;
/// a place that cannot be read is not held against the command.
pub fn require(places: &[Place]) -> Result<()> {
    let short: Vec<String> = places
        .iter()
        .filter_map(|p| {
            let free = p.free_gib()?;
            (free < p.min_gib).then(|| {
                format!(
                    "only {free:.2} GiB free at {} ({}; it needs {} GiB): {}",
                    p.path.display(),
                    p.what,
                    p.min_gib,
                    p.fix()
                )
            })
        })
        .collect();
    if !short.is_empty() {
        bail!("the disk is nearly full: {}. Nothing was started", short.join("; "));
    }
    Ok(())
}

fn free_gib(path: &Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct we pass; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as f64 * st.f_frsize as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_that_does_not_exist_yet_is_read_at_its_parent() {
        let place = Place::state(&std::env::temp_dir().join("slipway-no-such-dir/state"));
        assert!(place.free_gib().is_some_and(|g| g >= 0.0));
    }

    #[test]
    fn a_place_short_of_room_is_named_with_its_fix() {
        let mut place = Place::engine(&std::env::temp_dir());
        place.min_gib = f64::MAX;
        let err = require(&[place]).unwrap_err().to_string();
        assert!(err.contains("the Docker engine's data root"), "{err}");
        assert!(err.contains("docker system prune"), "{err}");
        assert!(err.contains(&std::env::temp_dir().display().to_string()), "{err}");
        require(&[Place::state(&std::env::temp_dir())]).unwrap_or_else(|e| {
            // Only a machine whose temporary directory is itself nearly full gets here.
            assert!(e.to_string().contains("nearly full"));
        });
    }
}
