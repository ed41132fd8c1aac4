//! `cluster info`, `nodes list` and `login`.

use clap::Subcommand;
use mgmt_api::dto::{ClusterDto, LoginResponse, NodeListDto};
use reqwest::Method;

use super::{CommandError, Context};
use crate::cli::client::Call;
use crate::cli::table::{byte_string, details, Table};
use crate::cli::Format;

/// `keelctl cluster ...`
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Identity, NQN, endpoints, counts and capacity (GET /api/v2/cluster).
    Info,
}

/// `keelctl nodes ...`
#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// The nodes and their NVMe/TCP endpoints (GET /api/v2/nodes).
    List,
}

/// Runs a `cluster` command.
pub fn run_cluster(ctx: &mut Context<'_>, command: &ClusterCommand) -> Result<(), CommandError> {
    match command {
        ClusterCommand::Info => {
            let reply = ctx
                .client
                .send(Call::new(Method::GET, &["api", "v2", "cluster"]))?;
            ctx.show(&reply, |r| Ok(render_cluster(&r.decode()?)))
        }
    }
}

/// Runs a `nodes` command.
pub fn run_nodes(ctx: &mut Context<'_>, command: &NodesCommand) -> Result<(), CommandError> {
    match command {
        NodesCommand::List => {
            let reply = ctx
                .client
                .send(Call::new(Method::GET, &["api", "v2", "nodes"]))?;
            ctx.show(&reply, |r| {
                let list: NodeListDto = r.decode()?;
                let mut t = Table::new(&[
                    "NAME",
                    "UUID",
                    "STATE",
                    "NVME ENDPOINT",
                    "DISCOVERY ENDPOINT",
                ]);
                for n in list.nodes {
                    t.row(vec![
                        n.name,
                        n.uuid,
                        n.state,
                        n.nvme_endpoint,
                        n.discovery_endpoint,
                    ]);
                }
                Ok(t.render())
            })
        }
    }
}

/// Runs `login`: prints the bearer token alone (for `export KEEL_TOKEN=$(keelctl login)`),
/// or the whole answer with `-o json`.
pub fn run_login(ctx: &mut Context<'_>) -> Result<(), CommandError> {
    let reply = ctx.client.login()?;
    match ctx.format {
        Format::Json => ctx.show(&reply, |_| Ok(String::new())),
        Format::Table => {
            let login: LoginResponse = reply.decode()?;
            ctx.print(&login.id_token)
        }
    }
}

fn render_cluster(c: &ClusterDto) -> String {
    let s = &c.statistics;
    details(&[
        ("UUID", c.uuid.clone()),
        ("Subsystem NQN", c.subsystem_nqn.clone()),
        ("API endpoints", c.api_endpoints.join(", ")),
        ("Discovery endpoints", c.discovery_endpoints.join(", ")),
        (
            "Max replicas",
            format!("{} (now {})", c.max_replicas, c.current_max_replicas),
        ),
        ("Volumes", c.num_volumes.to_string()),
        ("Snapshots", c.num_snapshots.to_string()),
        (
            "Effective capacity",
            byte_string(&s.effective_physical_storage),
        ),
        ("Physical used", byte_string(&s.physical_used_storage)),
        ("Physical free", byte_string(&s.free_physical_storage)),
        ("Logical used", byte_string(&s.logical_used_storage)),
        (
            "Est. logical capacity",
            byte_string(&s.estimated_logical_storage),
        ),
        (
            "Est. logical free",
            byte_string(&s.estimated_free_logical_storage),
        ),
        ("Provisioned", byte_string(&s.provisioned_storage)),
        (
            "Provisioned/effective",
            s.provisioned_to_effective_storage_ratio.clone(),
        ),
        ("Compression ratio", format!("{:.2}", s.compression_ratio)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_details_show_identity_and_capacity_in_units() {
        let mut c = ClusterDto {
            uuid: "c-1".into(),
            subsystem_nqn: "nqn.2024-01.io.keel:c".into(),
            ..ClusterDto::default()
        };
        c.api_endpoints = vec!["127.0.0.1:8443".into()];
        c.statistics.effective_physical_storage = (1u64 << 30).to_string();
        let text = render_cluster(&c);
        assert!(
            text.contains("Subsystem NQN:          nqn.2024-01.io.keel:c\n"),
            "{text}"
        );
        assert!(text.contains("Effective capacity:     1 GiB\n"), "{text}");
        assert!(
            text.contains("API endpoints:          127.0.0.1:8443\n"),
            "{text}"
        );
    }
}
