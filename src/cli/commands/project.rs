//! `project list|create|update`: the namespaces volumes and snapshots live in
//! (`--project` selects one; `default` always exists), and the QoS policy a
//! project's new volumes get when they name none.

use clap::Subcommand;
use mgmt_api::dto::{ProjectDto, ProjectListDto, UpdateProjectRequest};
use reqwest::Method;

use super::{or_dash, qos, CommandError, Context};
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
    /// Change a project (cluster admin only).
    Update {
        /// The project's name.
        name: String,
        /// QoS policy (name or UUID, global or of this project) that the
        /// project's new volumes get when they name none; existing volumes
        /// keep theirs.
        #[arg(long, value_name = "POLICY")]
        default_qos_policy: String,
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
            ctx.show(&reply, |r| Ok(render(&r.decode()?)))
        }
        ProjectCommand::Update {
            name,
            default_qos_policy,
        } => {
            let (policy_name, policy_uuid) = qos::reference(default_qos_policy);
            let body = UpdateProjectRequest {
                default_qos_policy_name: policy_name,
                default_qos_policy_uuid: policy_uuid,
                ..UpdateProjectRequest::default()
            };
            let one = ["api", "v2", "projects", name.as_str()];
            let reply = ctx.client.send(Call::new(Method::PUT, &one).json(&body))?;
            ctx.show(&reply, |r| Ok(render(&r.decode()?)))
        }
    }
}

/// A project as a `key: value` block.
pub fn render(p: &ProjectDto) -> String {
    details(&[
        ("Name", p.name.clone()),
        ("Description", or_dash(&p.description)),
        (
            "Default QoS policy",
            or_dash(p.default_qos_policy_name.as_deref().unwrap_or_default()),
        ),
    ])
}

/// Projects as a table; the free-text description comes last.
pub fn render_list(list: &ProjectListDto) -> String {
    let mut t = Table::new(&["NAME", "DEFAULT QOS", "DESCRIPTION"]);
    for p in &list.projects {
        t.row(vec![
            p.name.clone(),
            or_dash(p.default_qos_policy_name.as_deref().unwrap_or_default()),
            p.description.clone(),
        ]);
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
                    default_qos_policy_name: Some("gold".into()),
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
            "NAME     DEFAULT QOS  DESCRIPTION\ndefault  gold\np1       -            team one\n"
        );
    }

    #[test]
    fn a_project_shows_its_default_qos_policy() {
        let p = ProjectDto {
            name: "p1".into(),
            default_qos_policy_name: Some("gold".into()),
            ..ProjectDto::default()
        };
        assert_eq!(
            render(&p),
            "Name:                p1\nDescription:         -\nDefault QoS policy:  gold\n"
        );
        let none = render(&ProjectDto::default());
        assert!(none.ends_with("Default QoS policy:  -\n"), "{none}");
    }
}
