//! `scrub start|status`: the background pass that reads every live block and
//! checkpoint and verifies its checksum (`/api/v2/cluster/scrub`, a Keel
//! extension of the cluster API).

use std::time::{Duration, Instant};

use clap::Subcommand;
use mgmt_api::dto::{ScrubDto, ScrubStateDto};
use reqwest::{Method, StatusCode};

use super::{or_dash, CommandError, Context, POLL_INTERVAL};
use crate::cli::client::{Call, Reply};
use crate::cli::table::{bytes, details, Table};
use crate::cli::Format;

const PATH: [&str; 4] = ["api", "v2", "cluster", "scrub"];

/// `keelctl scrub ...`
#[derive(Subcommand, Debug)]
pub enum ScrubCommand {
    /// Start a pass now (cluster admin only); if one runs, it goes on.
    Start {
        /// Wait until the pass ends, then show what it found.
        #[arg(long)]
        wait: bool,
        /// Seconds --wait waits at most (a paced pass reads the pool at
        /// pool.scrub_mib_per_s).
        #[arg(
            long = "wait-timeout",
            value_name = "SECONDS",
            default_value_t = 600,
            requires = "wait"
        )]
        wait_timeout_secs: u64,
    },
    /// Progress of the running pass, and the damaged blocks of each volume and
    /// snapshot the last completed pass found.
    Status,
}

/// Runs a `scrub` command.
pub fn run(ctx: &mut Context<'_>, command: &ScrubCommand) -> Result<(), CommandError> {
    match command {
        ScrubCommand::Status => {
            let reply = ctx.client.send(Call::new(Method::GET, &PATH))?;
            ctx.show(&reply, |r| Ok(render(&r.decode()?)))
        }
        ScrubCommand::Start {
            wait,
            wait_timeout_secs,
        } => {
            let reply = ctx.client.send(Call::new(Method::POST, &PATH))?;
            let scrub: ScrubDto = reply.decode()?;
            let headline = if reply.status == StatusCode::ACCEPTED {
                "scrub pass started"
            } else {
                "a scrub pass is already running; it goes on"
            };
            if !wait {
                return ctx.show(&reply, |_| Ok(format!("{headline}\n{}", render(&scrub))));
            }
            if ctx.format == Format::Table {
                ctx.print(&format!("{headline}; waiting for it to end"))?;
            }
            // A short pass may already have ended when the answer was made:
            // its completed count then includes it.
            if scrub.state == ScrubStateDto::Idle {
                return ctx.show(&reply, |_| Ok(render(&scrub)));
            }
            let limit = Duration::from_secs(*wait_timeout_secs);
            let last = wait_for_pass(ctx, scrub.passes_completed, limit)?;
            ctx.show(&last, |r| Ok(render(&r.decode()?)))
        }
    }
}

/// Polls the scrub until more than `passes` passes completed, at most `limit`.
fn wait_for_pass(ctx: &Context<'_>, passes: u64, limit: Duration) -> Result<Reply, CommandError> {
    let deadline = Instant::now() + limit;
    loop {
        let reply = ctx.client.send(Call::new(Method::GET, &PATH))?;
        let scrub: ScrubDto = reply.decode()?;
        if scrub.passes_completed > passes {
            return Ok(reply);
        }
        if Instant::now() >= deadline {
            return Err(CommandError::WaitTimedOut {
                what: "the scrub pass".to_owned(),
                seconds: limit.as_secs(),
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The scrub as a `key: value` block, then a table of the damaged volumes.
pub fn render(s: &ScrubDto) -> String {
    let state = match s.state {
        ScrubStateDto::Running => "Running",
        ScrubStateDto::Idle => "Idle",
    };
    let progress = if s.blocks_total == 0 {
        format!("{} blocks", s.blocks_checked)
    } else {
        let percent = u128::from(s.blocks_checked) * 100 / u128::from(s.blocks_total);
        format!(
            "{} of {} blocks ({percent}%)",
            s.blocks_checked, s.blocks_total
        )
    };
    let pace = if s.bytes_per_second == 0 {
        "unpaced".to_owned()
    } else {
        format!("{}/s", bytes(s.bytes_per_second))
    };
    let mut text = details(&[
        ("State", state.to_owned()),
        ("Passes completed", s.passes_completed.to_string()),
        ("Progress", progress),
        (
            "Last started",
            or_dash(s.last_started.as_deref().unwrap_or("")),
        ),
        (
            "Last finished",
            or_dash(s.last_finished.as_deref().unwrap_or("")),
        ),
        ("Pace", pace),
        ("Damaged blocks", s.damaged_blocks.to_string()),
        ("Damaged metadata", s.metadata_damaged.to_string()),
    ]);
    if !s.volumes.is_empty() {
        let mut t = Table::new(&["KIND", "NAME", "PROJECT", "UUID", "DAMAGED", "LBAS"]);
        for v in &s.volumes {
            let name = match &v.name {
                Some(name) => name.clone(),
                None => format!("(engine id {})", v.engine_id),
            };
            t.row(vec![
                v.kind.clone(),
                name,
                or_dash(v.project_name.as_deref().unwrap_or("")),
                or_dash(v.uuid.as_deref().unwrap_or("")),
                v.damaged_blocks.to_string(),
                lbas_text(&v.damaged_lbas, v.damaged_blocks),
            ]);
        }
        text.push('\n');
        text.push_str(&t.render());
    }
    text
}

/// Most LBAs a table cell lists; `-o json` has every one the server sent.
const LBAS_SHOWN_MAX: usize = 8;

/// `3, 9, 12` or `3, 9, 12, ... (2000 in all)`.
fn lbas_text(lbas: &[u64], total: u64) -> String {
    let shown: Vec<String> = lbas
        .iter()
        .take(LBAS_SHOWN_MAX)
        .map(u64::to_string)
        .collect();
    let mut text = shown.join(", ");
    if total > shown.len() as u64 {
        text.push_str(&format!(", ... ({total} in all)"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgmt_api::dto::ScrubVolumeDto;

    #[test]
    fn status_shows_progress_pace_and_each_damaged_volume() {
        let s = ScrubDto {
            state: ScrubStateDto::Running,
            passes_completed: 3,
            blocks_checked: 50,
            blocks_total: 200,
            bytes_per_second: 8 << 20,
            damaged_blocks: 1,
            volumes: vec![
                ScrubVolumeDto {
                    uuid: Some("0b5e-u".into()),
                    name: Some("db1".into()),
                    project_name: Some("default".into()),
                    kind: "Volume".into(),
                    engine_id: 4,
                    damaged_blocks: 1,
                    damaged_lbas: vec![77],
                },
                ScrubVolumeDto {
                    kind: "Unknown".into(),
                    engine_id: 9,
                    damaged_blocks: 20,
                    damaged_lbas: (0..20).collect(),
                    ..ScrubVolumeDto::default()
                },
            ],
            ..ScrubDto::default()
        };
        let text = render(&s);
        assert!(text.contains("State:             Running\n"), "{text}");
        assert!(text.contains("50 of 200 blocks (25%)"), "{text}");
        assert!(text.contains("Pace:              8 MiB/s\n"), "{text}");
        assert!(text.contains("Last started:      -\n"), "{text}");
        assert!(text.contains("Volume   db1"), "{text}");
        assert!(text.contains("0b5e-u  1        77\n"), "{text}");
        assert!(text.contains("(engine id 9)"), "{text}");
        assert!(
            text.contains("0, 1, 2, 3, 4, 5, 6, 7, ... (20 in all)"),
            "{text}"
        );
    }
}
