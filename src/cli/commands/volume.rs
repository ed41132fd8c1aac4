//! `volume create|list|get|update|delete|acl|rollback`.

use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use mgmt_api::dto::{
    AclDto, CreateVolumeRequest, LabelDto, RollbackRequest, UpdateVolumeRequest, VolumeDto,
    VolumeListDto,
};
use reqwest::Method;
use uuid::Uuid;

use super::{labels_text, or_dash, parse_label, parse_size, qos, CommandError, Context};
use crate::cli::client::Call;
use crate::cli::table::{byte_string, details, Table};
use crate::cli::Format;

/// The host ACL value that lets every host connect.
pub const ALLOW_ANY: &str = "ALLOW_ANY";
/// The host ACL value that lets no host connect.
pub const ALLOW_NONE: &str = "ALLOW_NONE";

/// `keelctl volume ...`
#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume (thin-provisioned), optionally as a clone of a snapshot.
    Create(CreateArgs),
    /// List the project's volumes.
    List(ListArgs),
    /// Show one volume.
    Get {
        /// Volume name or UUID.
        volume: String,
    },
    /// Grow a volume, switch compression, change labels, the IP ACL or the QoS policy.
    Update(UpdateArgs),
    /// Grow a volume to a new size (volumes only grow).
    Resize {
        /// Volume name or UUID.
        volume: String,
        /// New size, e.g. 20GiB or 1.5TiB.
        #[arg(value_parser = parse_size)]
        size: u64,
    },
    /// Delete a volume (its space is reclaimed in the background).
    Delete {
        /// Volume name or UUID.
        volume: String,
        /// Wait until the volume is gone.
        #[arg(long)]
        wait: bool,
        /// Seconds --wait waits at most.
        #[arg(
            long = "wait-timeout",
            value_name = "SECONDS",
            default_value_t = 120,
            requires = "wait"
        )]
        wait_timeout_secs: u64,
    },
    /// Allow or deny hosts (by NVMe host NQN).
    #[command(subcommand)]
    Acl(AclCommand),
    /// Roll a volume back to one of its snapshots.
    Rollback {
        /// Volume name or UUID.
        volume: String,
        /// Snapshot name or UUID.
        #[arg(long)]
        snapshot: String,
    },
}

/// Options of a new volume shared by `volume create` and `clone create`.
#[derive(Args, Debug, Clone, Default)]
pub struct VolumeOptions {
    /// Host NQN allowed to connect; repeat for several (default: no host).
    #[arg(long = "acl", value_name = "NQN")]
    pub acl: Vec<String>,
    /// Let any host connect (ACL ALLOW_ANY).
    #[arg(long, conflicts_with = "acl")]
    pub allow_any: bool,
    /// Host address or network (e.g. 10.0.0.0/8) allowed to see the volume;
    /// repeat for several (default: any address).
    #[arg(long = "ip-acl", value_name = "ADDRESS")]
    pub ip_acl: Vec<String>,
    /// Logical block size in bytes.
    #[arg(long, value_parser = ["512", "4096"])]
    pub sector_size: Option<String>,
    /// Replica count (the cluster accepts at most its max replicas).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3))]
    pub replicas: Option<u32>,
    /// Compress the volume's data.
    #[arg(long)]
    pub compression: bool,
    /// Label as key=value; repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<LabelDto>,
    /// QoS policy (name or UUID, global or of --project) to hold the volume's
    /// I/O to (default: the project's default policy, if any).
    #[arg(long, value_name = "POLICY")]
    pub qos_policy: Option<String>,
}

/// `volume create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Name: letters, digits, '-', '_', '.'.
    pub name: String,
    /// Size, e.g. 10GiB (optional with --from-snapshot: the snapshot's size).
    #[arg(long, value_parser = parse_size, required_unless_present = "from_snapshot")]
    pub size: Option<u64>,
    /// Options of the new volume.
    #[command(flatten)]
    pub options: VolumeOptions,
    /// Make a thin clone of this snapshot (name or UUID).
    #[arg(long, value_name = "SNAPSHOT")]
    pub from_snapshot: Option<String>,
}

/// `volume list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// At most this many volumes (the server's maximum is 1000).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Start after this volume UUID (paging).
    #[arg(long, value_name = "UUID")]
    pub after: Option<Uuid>,
    /// Only clones of this snapshot (name or UUID).
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Include volumes being deleted.
    #[arg(long)]
    pub all: bool,
    /// Volumes per request while following pages (tests use small pages).
    #[arg(long, hide = true, default_value_t = LIST_PAGE_MAX, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
}

/// `on` or `off`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// `volume update`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("change").required(true).multiple(true)
    .args(["size", "compression", "labels", "remove_labels", "ip_acl", "qos_policy"])))]
pub struct UpdateArgs {
    /// Volume name or UUID.
    pub volume: String,
    /// New size (grow only), e.g. 20GiB.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Switch compression.
    #[arg(long, value_enum)]
    pub compression: Option<Switch>,
    /// Set a label (key=value), keeping the others; repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<LabelDto>,
    /// Remove the label with this key; repeat for several.
    #[arg(long = "remove-label", value_name = "KEY")]
    pub remove_labels: Vec<String>,
    /// Replace the IP ACL: host addresses or networks allowed, or ALLOW_ANY
    /// or ALLOW_NONE; repeat for several.
    #[arg(long = "ip-acl", value_name = "ADDRESS")]
    pub ip_acl: Vec<String>,
    /// Hold the volume to this QoS policy (name or UUID) from its next command.
    #[arg(long, value_name = "POLICY")]
    pub qos_policy: Option<String>,
}

/// `volume acl ...`
#[derive(Subcommand, Debug)]
pub enum AclCommand {
    /// Allow a host NQN (or ALLOW_ANY) to connect.
    Add {
        /// Volume name or UUID.
        volume: String,
        /// Host NQN, e.g. nqn.2014-08.org.nvmexpress:uuid:..., or ALLOW_ANY.
        nqn: String,
    },
    /// Stop allowing a host NQN (or ALLOW_ANY).
    Remove {
        /// Volume name or UUID.
        volume: String,
        /// Host NQN or ALLOW_ANY.
        nqn: String,
    },
}

/// Runs a `volume` command.
pub fn run(ctx: &mut Context<'_>, command: &VolumeCommand) -> Result<(), CommandError> {
    match command {
        VolumeCommand::Create(args) => {
            let source = match &args.from_snapshot {
                Some(s) => Some(ctx.snapshot(s)?.1.uuid),
                None => None,
            };
            create(ctx, &args.name, args.size, &args.options, source)
        }
        VolumeCommand::List(args) => list(ctx, args),
        VolumeCommand::Get { volume } => {
            let (reply, _) = ctx.volume(volume)?;
            ctx.show(&reply, |r| Ok(render(&r.decode()?)))
        }
        VolumeCommand::Update(args) => update(ctx, args),
        VolumeCommand::Resize { volume, size } => update(
            ctx,
            &UpdateArgs {
                volume: volume.clone(),
                size: Some(*size),
                compression: None,
                labels: Vec::new(),
                remove_labels: Vec::new(),
                ip_acl: Vec::new(),
                qos_policy: None,
            },
        ),
        VolumeCommand::Delete {
            volume,
            wait,
            wait_timeout_secs,
        } => delete(
            ctx,
            volume,
            wait.then(|| Duration::from_secs(*wait_timeout_secs)),
        ),
        VolumeCommand::Acl(AclCommand::Add { volume, nqn }) => change_acl(ctx, volume, nqn, true),
        VolumeCommand::Acl(AclCommand::Remove { volume, nqn }) => {
            change_acl(ctx, volume, nqn, false)
        }
        VolumeCommand::Rollback { volume, snapshot } => {
            let (_, v) = ctx.volume(volume)?;
            let (_, s) = ctx.snapshot(snapshot)?;
            let body = RollbackRequest {
                src_snapshot_uuid: Some(s.uuid),
                ..RollbackRequest::default()
            };
            let path = ctx.project_path(&["volumes", &v.uuid, "rollback"]);
            let reply = ctx.client.send(Call::new(Method::PUT, &path).json(&body))?;
            ctx.show(&reply, |r| Ok(render(&r.decode()?)))
        }
    }
}

/// Creates a volume (a thin clone when `source_snapshot` is given) and shows it.
pub fn create(
    ctx: &mut Context<'_>,
    name: &str,
    size: Option<u64>,
    options: &VolumeOptions,
    source_snapshot: Option<String>,
) -> Result<(), CommandError> {
    let sector_size = match options.sector_size.as_deref() {
        Some(text) => Some(
            text.parse::<u32>()
                .map_err(|_| CommandError::Usage(format!("{text:?} is not a sector size")))?,
        ),
        None => None,
    };
    let acl = if options.allow_any {
        Some(AclDto {
            values: vec![ALLOW_ANY.to_owned()],
        })
    } else if options.acl.is_empty() {
        None
    } else {
        Some(AclDto {
            values: options.acl.clone(),
        })
    };
    let (qos_policy_name, qos_policy_uuid) = qos_fields(options.qos_policy.as_deref());
    let body = CreateVolumeRequest {
        name: Some(name.to_owned()),
        size,
        replica_count: options.replicas,
        acl,
        ip_acl: (!options.ip_acl.is_empty()).then(|| AclDto {
            values: options.ip_acl.clone(),
        }),
        compression: options.compression.then_some(true),
        sector_size,
        labels: (!options.labels.is_empty()).then(|| options.labels.clone()),
        source_snapshot_uuid: source_snapshot,
        qos_policy_name,
        qos_policy_uuid,
        ..CreateVolumeRequest::default()
    };
    let reply = ctx
        .client
        .send(Call::new(Method::POST, &ctx.project_path(&["volumes"])).json(&body))?;
    ctx.show(&reply, |r| Ok(render(&r.decode()?)))
}

/// Most volumes one list request returns (the server's maximum and default).
const LIST_PAGE_MAX: u32 = 1000;
/// Most pages `volume list` follows: a million volumes.
const LIST_PAGES_MAX: usize = 1000;

/// Lists volumes. Without `--limit` or `--after` it follows the pages until the
/// last, so nothing is cut off silently; one page prints as received, several
/// print as one list in the same shape.
fn list(ctx: &mut Context<'_>, args: &ListArgs) -> Result<(), CommandError> {
    let snapshot = match &args.snapshot {
        Some(s) => Some(ctx.snapshot(s)?.1.uuid),
        None => None,
    };
    let follow = args.limit.is_none() && args.after.is_none();
    let page = args.limit.unwrap_or(args.page_size);
    let limit = (page != LIST_PAGE_MAX).then(|| page.to_string());
    let mut after = args.after.map(|a| a.to_string());
    let mut replies = Vec::new();
    let mut volumes = Vec::new();
    for _ in 0..LIST_PAGES_MAX {
        let path = ctx.project_path(&["volumes"]);
        let mut call = Call::new(Method::GET, &path);
        if let Some(l) = &limit {
            call = call.query("limit", l);
        }
        if let Some(a) = &after {
            call = call.query("offsetUUID", a);
        }
        if let Some(s) = &snapshot {
            call = call.query("snapshotUUID", s);
        }
        if args.all {
            call = call.query("showAll", "true");
        }
        let reply = ctx.client.send(call)?;
        let got: VolumeListDto = reply.decode()?;
        let full = u32::try_from(got.volumes.len()).unwrap_or(u32::MAX) >= page;
        after = got.volumes.last().map(|v| v.uuid.clone());
        volumes.extend(got.volumes);
        replies.push(reply);
        if !follow || !full || after.is_none() {
            break;
        }
    }
    let all = VolumeListDto { volumes };
    match replies.as_slice() {
        [one] => ctx.show(one, |_| Ok(render_list(&all))),
        _ if ctx.format == Format::Json => {
            // The same DTO the server serializes, so the shape and key order match a single page.
            let text =
                serde_json::to_string_pretty(&all).map_err(|e| CommandError::Stdout(e.into()))?;
            ctx.print(&text)
        }
        _ => ctx.print(&render_list(&all)),
    }
}

fn update(ctx: &mut Context<'_>, args: &UpdateArgs) -> Result<(), CommandError> {
    let (_, current) = ctx.volume(&args.volume)?;
    let labels_changed = !args.labels.is_empty() || !args.remove_labels.is_empty();
    let (qos_policy_name, qos_policy_uuid) = qos_fields(args.qos_policy.as_deref());
    let body = UpdateVolumeRequest {
        size: args.size,
        compression: args.compression.map(|s| s == Switch::On),
        labels: labels_changed
            .then(|| merge_labels(&current.labels, &args.labels, &args.remove_labels)),
        ip_acl: (!args.ip_acl.is_empty()).then(|| AclDto {
            values: args.ip_acl.clone(),
        }),
        qos_policy_name,
        qos_policy_uuid,
        ..UpdateVolumeRequest::default()
    };
    let path = ctx.project_path(&["volumes", &current.uuid]);
    // If-Match: labels are merged into what was just read, so a concurrent
    // change must make this update fail (412) rather than be overwritten.
    let call = Call::new(Method::PUT, &path)
        .json(&body)
        .if_match(Some(&current.etag));
    let reply = ctx.client.send(call)?;
    ctx.show(&reply, |r| Ok(render(&r.decode()?)))
}

/// The `qosPolicyName`/`qosPolicyUUID` pair for `--qos-policy`: both absent
/// without it, so the server keeps (or defaults) the volume's policy.
fn qos_fields(policy: Option<&str>) -> (Option<String>, Option<String>) {
    policy.map_or((None, None), qos::reference)
}

fn delete(ctx: &mut Context<'_>, id: &str, wait: Option<Duration>) -> Result<(), CommandError> {
    let (_, v) = ctx.volume(id)?;
    let path = ctx.project_path(&["volumes", &v.uuid]);
    let reply = ctx.client.send(Call::new(Method::DELETE, &path))?;
    if let Some(limit) = wait {
        ctx.wait_until_gone(&format!("volume {} to be deleted", v.name), &path, limit)?;
    }
    let text = match wait {
        Some(_) => format!("volume {} ({}) deleted", v.name, v.uuid),
        None => format!(
            "volume {} ({}) is being deleted (--wait waits until it is gone)",
            v.name, v.uuid
        ),
    };
    ctx.show(&reply, |_| Ok(text))
}

fn change_acl(ctx: &mut Context<'_>, id: &str, entry: &str, add: bool) -> Result<(), CommandError> {
    let (_, v) = ctx.volume(id)?;
    let values = if add {
        acl_with(&v.acl.values, entry)
    } else {
        acl_without(&v.acl.values, entry)
    }
    .map_err(|reason| CommandError::Acl(format!("volume {}: {reason}", v.name)))?;
    let body = UpdateVolumeRequest {
        acl: Some(AclDto { values }),
        ..UpdateVolumeRequest::default()
    };
    let path = ctx.project_path(&["volumes", &v.uuid]);
    let call = Call::new(Method::PUT, &path)
        .json(&body)
        .if_match(Some(&v.etag));
    let reply = ctx.client.send(call)?;
    ctx.show(&reply, |r| Ok(render(&r.decode()?)))
}

/// The ACL after allowing `entry`: ALLOW_ANY replaces a host list; a host
/// replaces ALLOW_NONE; adding to ALLOW_ANY would narrow access, so it is refused.
pub fn acl_with(values: &[String], entry: &str) -> Result<Vec<String>, String> {
    if entry == ALLOW_NONE {
        return Err(format!(
            "{ALLOW_NONE} is not added: remove the allowed hosts instead"
        ));
    }
    if values.iter().any(|v| v == entry) {
        return Err(format!("{entry} is already in the ACL"));
    }
    if entry == ALLOW_ANY {
        return Ok(vec![ALLOW_ANY.to_owned()]);
    }
    if values.iter().any(|v| v == ALLOW_ANY) {
        return Err(format!(
            "the ACL is {ALLOW_ANY}, which already admits {entry}; remove {ALLOW_ANY} first to admit only listed hosts"
        ));
    }
    let mut out: Vec<String> = values
        .iter()
        .filter(|v| *v != ALLOW_NONE)
        .cloned()
        .collect();
    out.push(entry.to_owned());
    Ok(out)
}

/// The ACL after removing `entry`; an empty list becomes ALLOW_NONE.
pub fn acl_without(values: &[String], entry: &str) -> Result<Vec<String>, String> {
    if !values.iter().any(|v| v == entry) {
        return Err(format!("{entry} is not in the ACL ({})", values.join(", ")));
    }
    let out: Vec<String> = values.iter().filter(|v| *v != entry).cloned().collect();
    if out.is_empty() {
        Ok(vec![ALLOW_NONE.to_owned()])
    } else {
        Ok(out)
    }
}

/// `current` labels with `set` applied (same key replaced in place, new keys
/// appended) and the `remove` keys dropped.
pub fn merge_labels(current: &[LabelDto], set: &[LabelDto], remove: &[String]) -> Vec<LabelDto> {
    let mut out: Vec<LabelDto> = current
        .iter()
        .filter(|l| !remove.contains(&l.key))
        .cloned()
        .collect();
    for label in set {
        match out.iter_mut().find(|l| l.key == label.key) {
            Some(existing) => existing.value = label.value.clone(),
            None => out.push(label.clone()),
        }
    }
    out
}

/// A volume as a `key: value` block.
pub fn render(v: &VolumeDto) -> String {
    let mut fields = vec![
        ("UUID", v.uuid.clone()),
        ("Name", v.name.clone()),
        ("Project", v.project_name.clone()),
        ("State", v.state.clone()),
        (
            "Size",
            format!("{} ({} bytes)", byte_string(&v.size), v.size),
        ),
        ("Replicas", v.replica_count.to_string()),
        ("Protection", or_dash(&v.protection_state)),
        ("Nodes", or_dash(&v.node_list.join(", "))),
        ("Rebuild", rebuild_text(&v.rebuild_progress)),
        ("Sector size", v.sector_size.to_string()),
        ("Compression", v.compression.clone()),
        ("ACL", v.acl.values.join(", ")),
        ("IP ACL", v.ip_acl.values.join(", ")),
        ("NSID", v.nsid.to_string()),
        ("Labels", or_dash(&labels_text(&v.labels))),
    ];
    if let Some(s) = &v.source_snapshot_uuid {
        fields.push(("Source snapshot", s.clone()));
    }
    if let Some(q) = qos_policy_text(v) {
        fields.push(("QoS policy", q));
    }
    fields.push((
        "Logical used",
        byte_string(&v.statistics.logical_used_storage),
    ));
    fields.push((
        "Physical used",
        byte_string(&v.statistics.physical_used_storage),
    ));
    fields.push(("QoS held back", qos_delay_text(v)));
    fields.push((
        "Written",
        format!(
            "{} by hosts, {} to devices ({}x)",
            byte_string(&v.statistics.host_written_storage),
            byte_string(&v.statistics.device_written_storage),
            v.statistics.write_amplification
        ),
    ));
    fields.push(("Created", v.creation_time.clone()));
    fields.push(("ETag", v.etag.clone()));
    if let Some(f) = &v.failure_reason {
        fields.push(("Failure", f.clone()));
    }
    details(&fields)
}

/// The volume's QoS policy as shown: `name (UUID)`, or `None` without one.
fn qos_policy_text(v: &VolumeDto) -> Option<String> {
    match (&v.qos_policy_name, &v.qos_policy_uuid) {
        (Some(name), Some(uuid)) => Some(format!("{name} ({uuid})")),
        (Some(name), None) => Some(name.clone()),
        (None, Some(uuid)) => Some(uuid.clone()),
        (None, None) => None,
    }
}

/// How much the QoS policy has delayed the volume's commands since it was
/// last exposed: `N commands, M ms`.
fn qos_delay_text(v: &VolumeDto) -> String {
    format!(
        "{} commands, {} ms",
        v.statistics.qos_delayed_commands, v.statistics.qos_delay_ms
    )
}

/// `rebuildProgress` as shown: a percentage, or "-" when none runs.
fn rebuild_text(progress: &str) -> String {
    match progress {
        "" | "None" => "-".to_owned(),
        percent => format!("{percent}%"),
    }
}

/// Volumes as a table.
pub fn render_list(list: &VolumeListDto) -> String {
    let mut t = Table::new(&[
        "NAME",
        "UUID",
        "STATE",
        "PROTECTION",
        "SIZE",
        "REPLICAS",
        "REBUILD",
        "NSID",
        "ACL",
    ]);
    for v in &list.volumes {
        t.row(vec![
            v.name.clone(),
            v.uuid.clone(),
            v.state.clone(),
            or_dash(&v.protection_state),
            byte_string(&v.size),
            v.replica_count.to_string(),
            rebuild_text(&v.rebuild_progress),
            v.nsid.to_string(),
            v.acl.values.join(","),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgmt_api::dto::VolumeStatisticsDto;

    fn s(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn adding_a_host_replaces_allow_none_and_appends_otherwise() {
        assert_eq!(acl_with(&s(&["ALLOW_NONE"]), "nqn.a"), Ok(s(&["nqn.a"])));
        assert_eq!(
            acl_with(&s(&["nqn.a"]), "nqn.b"),
            Ok(s(&["nqn.a", "nqn.b"]))
        );
        assert_eq!(acl_with(&s(&["nqn.a"]), "ALLOW_ANY"), Ok(s(&["ALLOW_ANY"])));
    }

    #[test]
    fn acl_additions_that_change_nothing_or_narrow_access_are_refused() {
        assert!(acl_with(&s(&["nqn.a"]), "nqn.a")
            .expect_err("dup")
            .contains("already"));
        assert!(acl_with(&s(&["ALLOW_ANY"]), "nqn.a")
            .expect_err("narrows")
            .contains("remove ALLOW_ANY first"));
        assert!(acl_with(&s(&["nqn.a"]), "ALLOW_NONE").is_err());
    }

    #[test]
    fn removing_the_last_host_leaves_allow_none() {
        assert_eq!(
            acl_without(&s(&["nqn.a", "nqn.b"]), "nqn.a"),
            Ok(s(&["nqn.b"]))
        );
        assert_eq!(acl_without(&s(&["nqn.a"]), "nqn.a"), Ok(s(&["ALLOW_NONE"])));
        assert_eq!(
            acl_without(&s(&["ALLOW_ANY"]), "ALLOW_ANY"),
            Ok(s(&["ALLOW_NONE"]))
        );
        assert!(acl_without(&s(&["nqn.a"]), "nqn.z")
            .expect_err("absent")
            .contains("not in the ACL (nqn.a)"));
    }

    #[test]
    fn labels_merge_in_place_append_and_remove() {
        let l = |k: &str, v: &str| LabelDto {
            key: k.into(),
            value: v.into(),
        };
        let merged = merge_labels(
            &[l("a", "1"), l("b", "2")],
            &[l("b", "3"), l("c", "4")],
            &["a".into()],
        );
        assert_eq!(merged, vec![l("b", "3"), l("c", "4")]);
    }

    #[test]
    fn volume_table_lists_sizes_in_units() {
        let v = VolumeDto {
            uuid: "u1".into(),
            name: "vol1".into(),
            state: "Available".into(),
            size: (10u64 << 30).to_string(),
            replica_count: 2,
            protection_state: "Degraded".into(),
            rebuild_progress: "42".into(),
            nsid: 3,
            acl: AclDto {
                values: s(&["nqn.a", "nqn.b"]),
            },
            ..VolumeDto::default()
        };
        let text = render_list(&VolumeListDto {
            volumes: vec![v.clone()],
        });
        assert_eq!(
            text,
            "NAME  UUID  STATE      PROTECTION  SIZE    REPLICAS  REBUILD  NSID  ACL\nvol1  u1    Available  Degraded    10 GiB  2         42%      3     nqn.a,nqn.b\n"
        );
        let block = render(&v);
        assert!(
            block.contains("Size:           10 GiB (10737418240 bytes)\n"),
            "{block}"
        );
        assert!(block.contains("Labels:         -\n"), "{block}");
        assert!(block.contains("Rebuild:        42%\n"), "{block}");
        assert!(!block.contains("QoS policy:"), "{block}");
        assert!(
            block.contains("QoS held back:  0 commands, 0 ms\n"),
            "{block}"
        );
    }

    #[test]
    fn volume_details_show_the_qos_policy_and_what_it_held_back() {
        let v = VolumeDto {
            qos_policy_name: Some("gold".into()),
            qos_policy_uuid: Some("q1".into()),
            statistics: VolumeStatisticsDto {
                qos_delayed_commands: 12,
                qos_delay_ms: 345,
                ..VolumeStatisticsDto::default()
            },
            ..VolumeDto::default()
        };
        let block = render(&v);
        assert!(block.contains("QoS policy:     gold (q1)\n"), "{block}");
        assert!(
            block.contains("QoS held back:  12 commands, 345 ms\n"),
            "{block}"
        );
    }

    #[test]
    fn volume_details_show_what_was_written_and_its_amplification() {
        let v = VolumeDto {
            statistics: VolumeStatisticsDto {
                host_written_storage: (1u64 << 30).to_string(),
                device_written_storage: (3u64 << 29).to_string(),
                write_amplification: "1.500".into(),
                ..VolumeStatisticsDto::default()
            },
            ..VolumeDto::default()
        };
        let block = render(&v);
        assert!(
            block.contains("Written:        1 GiB by hosts, 1.5 GiB to devices (1.500x)\n"),
            "{block}"
        );
    }

    #[test]
    fn qos_policy_flags_name_the_policy_by_name_or_uuid() {
        assert_eq!(qos_fields(None), (None, None));
        assert_eq!(qos_fields(Some("gold")), (Some("gold".into()), None));
        let uuid = "0c5e7a4e-1111-4c55-9f2e-000000000001";
        assert_eq!(qos_fields(Some(uuid)), (None, Some(uuid.into())));
    }
}
