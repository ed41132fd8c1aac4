//! `snapshot create|list|get|delete`.

use std::time::Duration;

use clap::Subcommand;
use mgmt_api::dto::{CreateSnapshotRequest, SnapshotDto, SnapshotListDto};
use reqwest::Method;
use uuid::Uuid;

use super::{or_dash, CommandError, Context};
use crate::cli::client::Call;
use crate::cli::table::{byte_string, details, Table};

/// `keelctl snapshot ...`
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Snapshot a volume (a point-in-time, read-only copy that shares its data).
    Create {
        /// Snapshot name: letters, digits, '-', '_', '.'.
        name: String,
        /// The volume to snapshot (name or UUID).
        #[arg(long)]
        volume: String,
        /// Free text (at most 256 characters).
        #[arg(long)]
        description: Option<String>,
        /// Retention period, recorded as given (e.g. 24h).
        #[arg(long)]
        retention: Option<String>,
    },
    /// List the project's snapshots.
    List {
        /// Only snapshots of this volume (name or UUID).
        #[arg(long)]
        volume: Option<String>,
        /// Include snapshots being deleted.
        #[arg(long)]
        all: bool,
    },
    /// Show one snapshot.
    Get {
        /// Snapshot name or UUID.
        snapshot: String,
    },
    /// Delete a snapshot.
    Delete {
        /// Snapshot name or UUID.
        snapshot: String,
        /// Wait until the snapshot is gone.
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
}

/// Runs a `snapshot` command.
pub fn run(ctx: &mut Context<'_>, command: &SnapshotCommand) -> Result<(), CommandError> {
    match command {
        SnapshotCommand::Create {
            name,
            volume,
            description,
            retention,
        } => {
            // A UUID goes as sourceVolumeUUID; a name is resolved by the server in
            // the same request, so there is no window between lookup and create.
            let (uuid, by_name) = match Uuid::parse_str(volume) {
                Ok(u) => (Some(u.to_string()), None),
                Err(_) => (None, Some(volume.clone())),
            };
            let body = CreateSnapshotRequest {
                name: Some(name.clone()),
                source_volume_uuid: uuid,
                source_volume_name: by_name,
                description: description.clone(),
                retention_time: retention.clone(),
                ..CreateSnapshotRequest::default()
            };
            let reply = ctx
                .client
                .send(Call::new(Method::POST, &ctx.project_path(&["snapshots"])).json(&body))?;
            ctx.show(&reply, |r| Ok(render(&r.decode()?)))
        }
        SnapshotCommand::List { volume, all } => {
            let volume = match volume {
                Some(v) => Some(ctx.volume(v)?.1.uuid),
                None => None,
            };
            let path = ctx.project_path(&["snapshots"]);
            let mut call = Call::new(Method::GET, &path);
            if let Some(v) = &volume {
                call = call.query("sourceVolumeUUID", v);
            }
            if *all {
                call = call.query("showAll", "true");
            }
            let reply = ctx.client.send(call)?;
            ctx.show(&reply, |r| Ok(render_list(&r.decode()?)))
        }
        SnapshotCommand::Get { snapshot } => {
            let (reply, _) = ctx.snapshot(snapshot)?;
            ctx.show(&reply, |r| Ok(render(&r.decode()?)))
        }
        SnapshotCommand::Delete {
            snapshot,
            wait,
            wait_timeout_secs,
        } => {
            let (_, s) = ctx.snapshot(snapshot)?;
            let path = ctx.project_path(&["snapshots", &s.uuid]);
            let reply = ctx.client.send(Call::new(Method::DELETE, &path))?;
            if *wait {
                let limit = Duration::from_secs(*wait_timeout_secs);
                ctx.wait_until_gone(&format!("snapshot {} to be deleted", s.name), &path, limit)?;
            }
            let text = if *wait {
                format!("snapshot {} ({}) deleted", s.name, s.uuid)
            } else {
                format!(
                    "snapshot {} ({}) is being deleted (--wait waits until it is gone)",
                    s.name, s.uuid
                )
            };
            ctx.show(&reply, |_| Ok(text))
        }
    }
}

/// A snapshot as a `key: value` block.
pub fn render(s: &SnapshotDto) -> String {
    let mut fields = vec![
        ("UUID", s.uuid.clone()),
        ("Name", s.name.clone()),
        ("Project", s.project_name.clone()),
        ("State", s.state.clone()),
        (
            "Source volume",
            format!("{} ({})", s.source_volume_name, s.source_volume_uuid),
        ),
        (
            "Size",
            format!("{} ({} bytes)", byte_string(&s.size), s.size),
        ),
        ("Sector size", s.sector_size.to_string()),
        ("Replicas", s.replica_count.to_string()),
        ("Description", or_dash(&s.description)),
    ];
    if let Some(r) = &s.retention_time {
        fields.push(("Retention", r.clone()));
    }
    fields.push(("Created", s.creation_time.clone()));
    fields.push(("ETag", s.etag.clone()));
    details(&fields)
}

/// Snapshots as a table.
pub fn render_list(list: &SnapshotListDto) -> String {
    let mut t = Table::new(&["NAME", "UUID", "STATE", "VOLUME", "SIZE", "CREATED"]);
    for s in &list.snapshots {
        t.row(vec![
            s.name.clone(),
            s.uuid.clone(),
            s.state.clone(),
            or_dash(&s.source_volume_name),
            byte_string(&s.size),
            s.creation_time.clone(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_table_and_details_name_the_source_volume() {
        let s = SnapshotDto {
            uuid: "s1".into(),
            name: "snap".into(),
            state: "Available".into(),
            source_volume_uuid: "v1".into(),
            source_volume_name: "vol".into(),
            size: "4096".into(),
            ..SnapshotDto::default()
        };
        let text = render_list(&SnapshotListDto {
            snapshots: vec![s.clone()],
        });
        assert_eq!(
            text,
            "NAME  UUID  STATE      VOLUME  SIZE   CREATED\nsnap  s1    Available  vol     4 KiB\n"
        );
        assert!(render(&s).contains("Source volume:  vol (v1)\n"));
        assert!(render(&s).contains("Description:    -\n"));
    }
}
