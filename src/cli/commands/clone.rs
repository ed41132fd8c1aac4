//! `clone create`: a thin clone is a new volume whose `sourceSnapshotUUID`
//! names the snapshot it shares data with.

use clap::{Args, Subcommand};

use super::volume::{create, VolumeOptions};
use super::{parse_size, CommandError, Context};

/// `keelctl clone ...`
#[derive(Subcommand, Debug)]
pub enum CloneCommand {
    /// Create a thin clone of a snapshot (instant; shares unchanged data).
    Create(CreateArgs),
}

/// `clone create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Name of the new volume.
    pub name: String,
    /// The snapshot to clone (name or UUID).
    #[arg(long)]
    pub snapshot: String,
    /// Size (default: the snapshot's; larger grows the clone).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Options of the new volume.
    #[command(flatten)]
    pub options: VolumeOptions,
}

/// Runs a `clone` command.
pub fn run(ctx: &mut Context<'_>, command: &CloneCommand) -> Result<(), CommandError> {
    match command {
        CloneCommand::Create(args) => {
            let (_, snapshot) = ctx.snapshot(&args.snapshot)?;
            create(
                ctx,
                &args.name,
                args.size,
                &args.options,
                Some(snapshot.uuid),
            )
        }
    }
}
