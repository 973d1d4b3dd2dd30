//! `cargo xtask logs [SERVICE] [--follow]`: the stack's logs, one service's or all.

use anyhow::Result;

use crate::compose::Stack;
use crate::{flags, project::Project};

impl flags::Logs {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let stack = Stack::new(project, None)?;
        let mut args = vec!["logs", "--no-color"];
        if self.follow {
            args.push("--follow");
        }
        if let Some(service) = &self.service {
            project.manifest.service_names(std::slice::from_ref(service))?;
            args.push(service);
        }
        crate::plan::Plan {
            steps: vec![stack.step("show the logs", &args)],
        }
        .execute(dry_run)?;
        Ok(())
    }
}
