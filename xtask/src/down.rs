//! `cargo xtask down [--volumes]`: stop and remove the stack's containers and network
//! (and its volumes with `--volumes`), orphans included.

use anyhow::Result;

use crate::compose::Stack;
use crate::{flags, project::Project};

impl flags::Down {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let stack = Stack::new(project, None)?;
        let mut args = vec!["down", "--remove-orphans", "--timeout", "5"];
        if self.volumes {
            args.push("--volumes");
        }
        let plan = crate::plan::Plan {
            steps: vec![stack.step(format!("take the stack `{}` down", stack.name), &args)],
        };
        plan.execute(dry_run)?;
        Ok(())
    }
}
