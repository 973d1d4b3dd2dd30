//! `cargo xtask ps [--json]`: the stack's services, their state, health and ports.

use anyhow::Result;

use crate::compose::Stack;
use crate::{flags, project::Project, ui};

impl flags::Ps {
    pub fn run(self, project: &Project, dry_run: bool) -> Result<()> {
        let stack = Stack::new(project, None)?;
        if dry_run {
            print!(
                "{}",
                crate::plan::Plan {
                    steps: vec![stack.step("list", &["ps", "--all", "--format", "json"])]
                }
                .render()
            );
            return Ok(());
        }
        let states = stack.ps()?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&states)?);
            return Ok(());
        }
        if states.is_empty() {
            ui::note(&format!(
                "the stack `{}` is not up: `cargo xtask dev` starts it",
                stack.name
            ));
            return Ok(());
        }
        println!("{:<10} {:<9} {:<10} PORTS", "SERVICE", "STATE", "HEALTH");
        for s in &states {
            println!(
                "{:<10} {:<9} {:<10} {}",
                s.service,
                s.state,
                if s.health.is_empty() { "-" } else { &s.health },
                s.ports.join(", ")
            );
        }
        Ok(())
    }
}
