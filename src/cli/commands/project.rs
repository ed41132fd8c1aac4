//! `project list|create`: the namespaces volumes and snapshots live in
//! (`--project` selects one; `default` always exists).

use clap::Subcommand;
use mgmt_api::dto::{ProjectDto, ProjectListDto};
use reqwest::Method;

use super::{or_dash, CommandError, Context};
use crate::cli::client::Call;
use crate::cli::table::{details, Table};

/// `keelctl project ...`
#[derive(Subcommand, Debug)]
pub enum ProjectCommand {
    /// List the projects you can read.
    List,
    /// Create a project (cluster admin only).
    Create {
        /// Name: letters, digits, '-', '_', '.'.
        name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
}

/// Runs a `project` command.
pub fn run(ctx: &mut Context<'_>, command: &ProjectCommand) -> Result<(), CommandError> {
    let path = ["api", "v2", "projects"];
    match command {
        ProjectCommand::List => {
            let reply = ctx.client.send(Call::new(Method::GET, &path))?;
            ctx.show(&reply, |r| Ok(render_list(&r.decode()?)))
        }
        ProjectCommand::Create { name, description } => {
            let body = ProjectDto {
                name: name.clone(),
                description: description.clone(),
                default_qos_policy_name: None,
            };
            let reply = ctx
                .client
                .send(Call::new(Method::POST, &path).json(&body))?;
            ctx.show(&reply, |r| {
                let p: ProjectDto = r.decode()?;
                Ok(details(&[
                    ("Name", p.name),
                    ("Description", or_dash(&p.description)),
                ]))
            })
        }
    }
}

/// Projects as a table.
pub fn render_list(list: &ProjectListDto) -> String {
    let mut t = Table::new(&["NAME", "DESCRIPTION"]);
    for p in &list.projects {
        t.row(vec![p.name.clone(), p.description.clone()]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_list_as_a_table() {
        let list = ProjectListDto {
            projects: vec![
                ProjectDto {
                    name: "default".into(),
                    ..ProjectDto::default()
                },
                ProjectDto {
                    name: "p1".into(),
                    description: "team one".into(),
                    ..ProjectDto::default()
                },
            ],
        };
        assert_eq!(
            render_list(&list),
            "NAME     DESCRIPTION\ndefault\np1       team one\n"
        );
    }
}
