//! `cluster info`, `node list`, `node show` and `login`.

use clap::Subcommand;
use mgmt_api::dto::{ClusterDto, LoginResponse, NodeDto, NodeListDto};
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

/// `keelctl node ...`
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Every node: state, ordinal, endpoints, failure domains, capacity
    /// (GET /api/v2/nodes).
    List,
    /// One node (GET /api/v2/nodes/{UUID}).
    #[command(visible_alias = "get")]
    Show {
        /// The node's name or UUID.
        node: String,
    },
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

/// Runs a `node` command.
pub fn run_node(ctx: &mut Context<'_>, command: &NodeCommand) -> Result<(), CommandError> {
    match command {
        NodeCommand::List => {
            let reply = ctx
                .client
                .send(Call::new(Method::GET, &["api", "v2", "nodes"]))?;
            ctx.show(&reply, |r| Ok(render_nodes(r.decode()?)))
        }
        NodeCommand::Show { node } => {
            let uuid = match uuid::Uuid::parse_str(node) {
                Ok(uuid) => uuid.to_string(),
                Err(_) => node_uuid_by_name(ctx, node)?,
            };
            let reply = ctx
                .client
                .send(Call::new(Method::GET, &["api", "v2", "nodes", &uuid]))?;
            ctx.show(&reply, |r| Ok(render_node(&r.decode()?)))
        }
    }
}

fn node_uuid_by_name(ctx: &mut Context<'_>, name: &str) -> Result<String, CommandError> {
    let reply = ctx
        .client
        .send(Call::new(Method::GET, &["api", "v2", "nodes"]))?;
    let list: NodeListDto = reply.decode()?;
    list.nodes
        .into_iter()
        .find(|n| n.name == name)
        .map(|n| n.uuid)
        .ok_or_else(|| CommandError::NotFound {
            what: "node",
            name: name.to_owned(),
        })
}

fn render_nodes(list: NodeListDto) -> String {
    let mut t = Table::new(&[
        "NAME",
        "UUID",
        "STATE",
        "ORDINAL",
        "NVME ENDPOINT",
        "FAILURE DOMAINS",
        "CAPACITY",
        "FREE",
    ]);
    for n in list.nodes {
        t.row(vec![
            n.name,
            n.uuid,
            n.state,
            n.ordinal.to_string(),
            n.nvme_endpoint,
            n.failure_domains.join(","),
            byte_string(&n.statistics.installed_physical_storage),
            byte_string(&n.statistics.free_physical_storage),
        ]);
    }
    t.render()
}

fn render_node(n: &NodeDto) -> String {
    details(&[
        ("Name", n.name.clone()),
        ("UUID", n.uuid.clone()),
        ("State", n.state.clone()),
        ("Ordinal", n.ordinal.to_string()),
        ("NVMe endpoint", n.nvme_endpoint.clone()),
        ("Discovery endpoint", n.discovery_endpoint.clone()),
        ("Failure domains", n.failure_domains.join(", ")),
        (
            "Capacity",
            byte_string(&n.statistics.installed_physical_storage),
        ),
        ("Used", byte_string(&n.statistics.physical_used_storage)),
        ("Free", byte_string(&n.statistics.free_physical_storage)),
    ])
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
        (
            "Written",
            format!(
                "{} by hosts, {} to devices ({:.2}x)",
                byte_string(&s.host_written_storage),
                byte_string(&s.device_written_storage),
                s.write_amplification
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_show_state_ordinal_domains_and_capacity_in_units() {
        let mut n = NodeDto {
            uuid: "n-1".into(),
            name: "node-1".into(),
            state: "Inactive".into(),
            ordinal: 3,
            failure_domains: vec!["rack-a".into(), "pdu-2".into()],
            ..NodeDto::default()
        };
        n.statistics.installed_physical_storage = (2u64 << 30).to_string();
        n.statistics.free_physical_storage = (1u64 << 30).to_string();
        let table = render_nodes(NodeListDto {
            nodes: vec![n.clone()],
        });
        let row = table.lines().nth(1).expect("a row");
        for cell in ["node-1", "Inactive", "3", "rack-a,pdu-2", "2 GiB", "1 GiB"] {
            assert!(row.contains(cell), "{cell} missing: {table}");
        }
        let text = render_node(&n);
        assert!(text.contains("State:"), "{text}");
        assert!(text.contains("Failure domains:"), "{text}");
        assert!(text.contains("rack-a, pdu-2"), "{text}");
    }

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
