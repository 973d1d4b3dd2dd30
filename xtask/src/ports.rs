//! Whether the stack's ports are free, and who holds one that is not: read from
//! `/proc/net/tcp{,6}` (the listening socket's inode) and `/proc/*/fd` (its owner).

use std::net::TcpListener;

/// Who holds a port, as far as this user can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub command: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.command, self.pid) {
            (Some(cmd), Some(pid)) => write!(f, "`{cmd}` (pid {pid})"),
            (None, Some(pid)) => write!(f, "pid {pid}"),
            _ => f.write_str("another process (not visible to this user)"),
        }
    }
}

/// `None` when the port can be bound on all interfaces (as compose publishes it),
/// else who holds it.
pub fn in_use(port: u16) -> Option<Holder> {
    match TcpListener::bind(("0.0.0.0", port)) {
        Ok(_) => None,
        Err(_) => Some(holder(port)),
    }
}

fn holder(port: u16) -> Holder {
    let inodes = listening_inodes(port);
    let owner = std::fs::read_dir("/proc").ok().and_then(|procs| {
        procs.flatten().find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
            let owns = fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).ok().is_some_and(|target| {
                    let t = target.to_string_lossy();
                    inodes.iter().any(|i| t == format!("socket:[{i}]"))
                })
            });
            owns.then_some(pid)
        })
    });
    let command = owner.and_then(|pid| {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        Some(comm.trim().to_owned())
    });
    Holder { pid: owner, command }
}

/// Inodes of the sockets listening on `port` (TCP state 0A).
fn listening_inodes(port: u16) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let local_port = cols[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(cols[9].to_owned());
            }
        }
    }
    inodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_port_names_its_holder() {
        let listener = TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let holder = in_use(port).expect("the port is held by this test");
        assert_eq!(holder.pid, Some(std::process::id()));
        drop(listener);
        // Released: no longer ours (another process may take a free ephemeral port at once).
        assert_ne!(in_use(port).and_then(|h| h.pid), Some(std::process::id()));
    }
}
