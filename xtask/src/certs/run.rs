//! What a running service is given: its own certificates, never another service's key
//! and never the Root CA's key, in `.<brand>/run-certs/<service>/`, mounted read-only at
//! `/certs` (by compose, `ci` and `bench`); and the user it runs as.
//!
//! The user is the host user, who owns the copies and reads its 0600 keys. On a host
//! where that is root, the services run as the images' own non-root user
//! ([`IMAGE_USER`]) instead, and the copies are given to it: root never has to run a
//! service as root to let it read a key.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{CA_CERT, Spec, make_dir, stage};
use crate::project::Project;

/// The non-root user every image declares (`USER 10001:10001`).
pub const IMAGE_USER: (u32, u32) = (10001, 10001);

/// Who the stack's containers run as, and where each service's certificates are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// `.<brand>/run-certs`: one directory per service.
    pub dir: PathBuf,
    /// The project's certificates, which the copies are made from.
    source: PathBuf,
}

impl RunAs {
    /// Decided from the host user alone; nothing is written.
    pub fn for_project(project: &Project) -> RunAs {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let (uid, gid) = if uid == 0 { IMAGE_USER } else { (uid, gid) };
        RunAs {
            uid,
            gid,
            dir: project.state_dir().join("run-certs"),
            source: project.certs_dir(),
        }
    }

    /// `uid:gid`, for `--user` and compose's `user:`.
    pub fn user(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }

    /// The directory mounted at `/certs` for `service`.
    pub fn service_dir(&self, service: &str) -> PathBuf {
        self.dir.join(service)
    }

    /// The files `service` is given: the Root CA's certificate, and each certificate the
    /// service owns (its server certificate, its client certificate) with its key.
    pub fn files_for(spec: &Spec, service: &str) -> Vec<String> {
        let mut files = vec![CA_CERT.to_owned()];
        for w in spec.wanted.iter().filter(|w| w.service.as_deref() == Some(service)) {
            files.push(w.cert_file());
            files.push(w.key_file());
        }
        files
    }

    /// Copy each service's files from the project's certificates (again every time: a
    /// rotation changes them), owned by the run user, keys 0600; a file no longer
    /// wanted is removed. Each file is written beside its place and renamed into it.
    pub fn prepare(&self, spec: &Spec) -> Result<()> {
        let root = geteuid_is_root();
        self.make_dir(&self.dir, root)?;
        // A service may own several certificates (server and client): each once.
        let services: std::collections::BTreeSet<&str> =
            spec.wanted.iter().filter_map(|w| w.service.as_deref()).collect();
        for service in &services {
            let dir = self.service_dir(service);
            self.make_dir(&dir, root)?;
            let files = RunAs::files_for(spec, service);
            for name in &files {
                let from = self.source.join(name);
                let text = fs::read_to_string(&from)
                    .with_context(|| format!("reading {}: run `cargo xtask certs` to make it", from.display()))?;
                let to = dir.join(name);
                if fs::read_to_string(&to).is_ok_and(|old| old == text) && owned_by(&to, self) {
                    continue;
                }
                let tmp = stage(&to, &text, name.ends_with(".key"))?;
                if root {
                    std::os::unix::fs::chown(&tmp, Some(self.uid), Some(self.gid))
                        .with_context(|| format!("giving {} to {}", tmp.display(), self.user()))?;
                }
                fs::rename(&tmp, &to).with_context(|| format!("writing {}", to.display()))?;
            }
            for entry in fs::read_dir(&dir)?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !files.contains(&name) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        for entry in fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !services.contains(name.as_str()) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    /// A directory only the run user can enter (0700, as the certificates' own), given
    /// to it.
    fn make_dir(&self, dir: &Path, root: bool) -> Result<()> {
        make_dir(dir)?;
        if root {
            std::os::unix::fs::chown(dir, Some(self.uid), Some(self.gid))
                .with_context(|| format!("giving {} to {}", dir.display(), self.user()))?;
        }
        Ok(())
    }
}

fn geteuid_is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn owned_by(path: &Path, run: &RunAs) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).is_ok_and(|m| m.uid() == run.uid && m.gid() == run.gid)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_service_is_given_its_own_keys_and_never_the_cas() {
        let project = Project::load().unwrap();
        let spec = Spec::from_manifest(&project.manifest);
        let gateway = RunAs::files_for(&spec, "gateway");
        assert_eq!(
            gateway,
            [
                "rootCA.crt",
                "gateway.crt",
                "gateway.key",
                "gateway-client.crt",
                "gateway-client.key"
            ]
        );
        let agent = RunAs::files_for(&spec, "agent");
        assert!(agent.contains(&"agent.key".to_owned()), "{agent:?}");
        // The agent's own health check presents a client certificate to it.
        assert!(agent.contains(&"agent-client.key".to_owned()), "{agent:?}");
        for files in [&gateway, &agent] {
            assert!(!files.contains(&"rootCA.key".to_owned()), "{files:?}");
        }
        assert!(!agent.iter().any(|f| f.starts_with("gateway")), "{agent:?}");
    }

    #[test]
    fn the_copies_are_the_run_users_and_follow_a_rotation() {
        let dir = std::env::temp_dir().join(format!("slipway-run-certs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let project = Project::load().unwrap();
        let spec = Spec::from_manifest(&project.manifest);
        let source = dir.join("certs");
        super::super::ensure(&source, &spec, None).unwrap();
        let mut run = RunAs::for_project(&project);
        run.dir = dir.join("run-certs");
        run.source = source.clone();
        run.prepare(&spec).unwrap();
        let key = run.service_dir("agent").join("agent.key");
        assert_eq!(fs::read(&key).unwrap(), fs::read(source.join("agent.key")).unwrap());
        assert!(owned_by(&key, &run));
        assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!run.service_dir("agent").join("rootCA.key").exists());
        // A rotated leaf reaches the copy; a stray file is removed.
        fs::write(run.service_dir("agent").join("stray.key"), "x").unwrap();
        super::super::ensure(&source, &spec, Some(super::super::Rotate::Leaf)).unwrap();
        run.prepare(&spec).unwrap();
        assert_eq!(fs::read(&key).unwrap(), fs::read(source.join("agent.key")).unwrap());
        assert!(!run.service_dir("agent").join("stray.key").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
