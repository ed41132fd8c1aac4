//! `workflow list|get|cancel` and `thickclone volume|snapshot` (the DMS v1
//! routes: a thick clone runs as a workflow and answers with its id).

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use mgmt_api::dto::{
    CloneDestinationDto, CloneSourceDto, ThickCloneRequest, WorkflowDto, WorkflowEnvelopeDto,
    WorkflowIdDto, WorkflowListDto,
};
use reqwest::Method;
use uuid::Uuid;

use super::{or_dash, parse_size, parse_uuid, CommandError, Context, POLL_INTERVAL};
use crate::cli::client::{Call, Reply};
use crate::cli::table::{details, Table};
use crate::cli::Format;

/// The state of a workflow still at work.
const RUNNING: &str = "Running";
/// The state of a workflow that succeeded.
const COMPLETED: &str = "Completed";

/// `keelctl workflow ...`
#[derive(Subcommand, Debug)]
pub enum WorkflowCommand {
    /// List workflows, newest first.
    List {
        /// Workflows per request (server default and maximum: 100).
        #[arg(long)]
        page_size: Option<u32>,
        /// Print only the page at this token (from a previous list's nextPageToken).
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Show one workflow's state and progress.
    Get {
        /// Workflow id.
        #[arg(value_parser = parse_uuid)]
        id: Uuid,
    },
    /// Cancel a running workflow (its partial result is removed).
    Cancel {
        /// Workflow id.
        #[arg(value_parser = parse_uuid)]
        id: Uuid,
    },
}

/// `keelctl thickclone ...`
#[derive(Subcommand, Debug)]
pub enum ThickCloneCommand {
    /// Copy a snapshot into a new, independent volume.
    Volume(ThickCloneArgs),
    /// Copy a snapshot into a new, independent snapshot.
    Snapshot(ThickCloneArgs),
}

/// Options of both thick clones.
#[derive(Args, Debug)]
pub struct ThickCloneArgs {
    /// Name of the new volume or snapshot.
    pub name: String,
    /// The snapshot to copy (name or UUID, in --project).
    #[arg(long)]
    pub snapshot: String,
    /// Project of the copy (default: the snapshot's).
    #[arg(long)]
    pub dest_project: Option<String>,
    /// Size of the copy (at least the snapshot's), e.g. 20GiB.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Replica count of the copy.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3))]
    pub replicas: Option<u32>,
    /// Logical block size of the copy: 512 or 4096.
    #[arg(long, value_parser = clap::value_parser!(u32))]
    pub sector_size: Option<u32>,
    /// Compress the copy.
    #[arg(long)]
    pub compression: bool,
    /// Description (snapshot copies only).
    #[arg(long)]
    pub description: Option<String>,
    /// Wait until the workflow ends; fails unless it completes.
    #[arg(long)]
    pub wait: bool,
    /// Seconds --wait waits at most.
    #[arg(
        long = "wait-timeout",
        value_name = "SECONDS",
        default_value_t = 600,
        requires = "wait"
    )]
    pub wait_timeout_secs: u64,
}

/// Runs a `workflow` command.
pub fn run(ctx: &mut Context<'_>, command: &WorkflowCommand) -> Result<(), CommandError> {
    match command {
        WorkflowCommand::List {
            page_size,
            page_token,
        } => list(ctx, *page_size, page_token.as_deref()),
        WorkflowCommand::Get { id } => {
            let reply = get(ctx, *id)?;
            ctx.show(&reply, |r| {
                Ok(render(&r.decode::<WorkflowEnvelopeDto>()?.workflow))
            })
        }
        WorkflowCommand::Cancel { id } => {
            let id = id.to_string();
            let reply = ctx.client.send(Call::new(
                Method::POST,
                &["api", "v1", "workflows", &id, "cancel"],
            ))?;
            ctx.show(&reply, |_| Ok(format!("workflow {id} is being canceled")))
        }
    }
}

/// Runs a `thickclone` command.
pub fn run_thick_clone(
    ctx: &mut Context<'_>,
    command: &ThickCloneCommand,
) -> Result<(), CommandError> {
    let (kind, args) = match command {
        ThickCloneCommand::Volume(a) => ("volumes", a),
        ThickCloneCommand::Snapshot(a) => ("snapshots", a),
    };
    if kind == "volumes" && args.description.is_some() {
        return Err(CommandError::Usage(
            "--description applies only to `thickclone snapshot`".to_owned(),
        ));
    }
    let (_, snapshot) = ctx.snapshot(&args.snapshot)?;
    let body = ThickCloneRequest {
        src: CloneSourceDto {
            snap_id: snapshot.uuid,
            project_name: Some(ctx.project.to_owned()),
            cluster_id: None,
        },
        dst: CloneDestinationDto {
            name: args.name.clone(),
            project_name: args.dest_project.clone(),
            size: args.size,
            replica: args.replicas,
            sector_size: args.sector_size,
            compression: args.compression.then_some(true),
            description: args.description.clone(),
            ..CloneDestinationDto::default()
        },
    };
    let reply = ctx
        .client
        .send(Call::new(Method::POST, &["api", "v1", kind, "thickclone"]).json(&body))?;
    let started: WorkflowIdDto = reply.decode()?;
    if !args.wait {
        let text = format!(
            "thick clone {} started: workflow {} (follow it with `keelctl workflow get {}`)",
            args.name, started.workflow_id, started.workflow_id
        );
        return ctx.show(&reply, |_| Ok(text));
    }
    if ctx.format == Format::Table {
        ctx.print(&format!(
            "workflow {} started; waiting for it to end",
            started.workflow_id
        ))?;
    }
    let id = Uuid::parse_str(&started.workflow_id).map_err(|_| CommandError::NotJson {
        what: reply.what.clone(),
    })?;
    // Progress on one line of the terminal, for a person watching; nothing
    // when stderr is a file or a pipe, or the output is JSON.
    let live = ctx.format == Format::Table && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (last, workflow) =
        wait_for_end(ctx, id, Duration::from_secs(args.wait_timeout_secs), live)?;
    ctx.show(&last, |_| Ok(render(&workflow)))?;
    if workflow.state == COMPLETED {
        Ok(())
    } else {
        Err(CommandError::WorkflowFailed {
            id: workflow.id,
            state: workflow.state,
            message: workflow.msg,
        })
    }
}

/// Most pages `workflow list` follows.
const LIST_PAGES_MAX: usize = 1000;

/// Lists workflows. Without `--page-token` it follows `nextPageToken` to the
/// last page (`--page-size` sets the size of each request); one page prints as
/// received, several as one list in the same shape. With `--page-token` it
/// prints that one page and, in tables, the token of the next.
fn list(
    ctx: &mut Context<'_>,
    page_size: Option<u32>,
    page_token: Option<&str>,
) -> Result<(), CommandError> {
    let follow = page_token.is_none();
    let size = page_size.map(|s| s.to_string());
    let mut token = page_token.map(str::to_owned);
    let mut replies = Vec::new();
    let mut all = WorkflowListDto::default();
    for _ in 0..LIST_PAGES_MAX {
        let mut call = Call::new(Method::GET, &["api", "v1", "workflows"]);
        if let Some(s) = &size {
            call = call.query("pageSize", s);
        }
        if let Some(t) = &token {
            call = call.query("nextPageToken", t);
        }
        let reply = ctx.client.send(call)?;
        let page: WorkflowListDto = reply.decode()?;
        all.workflows.extend(page.workflows);
        all.next_page_token = page.next_page_token;
        replies.push(reply);
        if !follow || all.next_page_token.is_empty() {
            break;
        }
        token = Some(all.next_page_token.clone());
    }
    match replies.as_slice() {
        [one] => ctx.show(one, |_| Ok(render_list(&all))),
        _ if ctx.format == Format::Json => {
            let text =
                serde_json::to_string_pretty(&all).map_err(|e| CommandError::Stdout(e.into()))?;
            ctx.print(&text)
        }
        _ => ctx.print(&render_list(&all)),
    }
}

fn get(ctx: &Context<'_>, id: Uuid) -> Result<Reply, CommandError> {
    let id = id.to_string();
    Ok(ctx
        .client
        .send(Call::new(Method::GET, &["api", "v1", "workflows", &id]))?)
}

/// Polls a workflow until it leaves Running, at most `limit`; with `live`,
/// shows its progress on one line of stderr meanwhile.
fn wait_for_end(
    ctx: &Context<'_>,
    id: Uuid,
    limit: Duration,
    live: bool,
) -> Result<(Reply, WorkflowDto), CommandError> {
    use std::io::Write as _;
    let deadline = Instant::now() + limit;
    loop {
        let reply = get(ctx, id)?;
        let workflow = reply.decode::<WorkflowEnvelopeDto>()?.workflow;
        if live {
            let mut err = std::io::stderr();
            let _ = write!(err, "\r\x1b[2K{} {}", workflow.state, progress(&workflow));
            if workflow.state != RUNNING {
                let _ = writeln!(err);
            }
            let _ = err.flush();
        }
        if workflow.state != RUNNING {
            return Ok((reply, workflow));
        }
        if Instant::now() >= deadline {
            return Err(CommandError::WaitTimedOut {
                what: format!("workflow {id}"),
                seconds: limit.as_secs(),
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A workflow as a `key: value` block.
pub fn render(w: &WorkflowDto) -> String {
    details(&[
        ("ID", w.id.clone()),
        ("Type", w.kind.clone()),
        ("State", w.state.clone()),
        ("Progress", progress(w)),
        ("Message", or_dash(&w.msg)),
        ("Created", w.created_at.clone()),
        ("Started", or_dash(w.started_at.as_deref().unwrap_or(""))),
        ("Ended", or_dash(w.ended_at.as_deref().unwrap_or(""))),
    ])
}

/// Workflows as a table, with the next-page token after it when there is one.
pub fn render_list(list: &WorkflowListDto) -> String {
    let mut t = Table::new(&["ID", "TYPE", "STATE", "PROGRESS", "CREATED"]);
    for w in &list.workflows {
        t.row(vec![
            w.id.clone(),
            w.kind.clone(),
            w.state.clone(),
            progress(w),
            w.created_at.clone(),
        ]);
    }
    let mut text = t.render();
    if !list.next_page_token.is_empty() {
        text.push_str(&format!("more: --page-token {}\n", list.next_page_token));
    }
    text
}

fn progress(w: &WorkflowDto) -> String {
    if w.progress.stage.is_empty() {
        format!("{}%", w.progress.percent)
    } else {
        format!("{}% ({})", w.progress.percent, w.progress.stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgmt_api::dto::ProgressDto;

    #[test]
    fn workflow_list_shows_progress_and_the_next_page() {
        let w = WorkflowDto {
            id: "w1".into(),
            kind: "thick clone volume".into(),
            state: "Running".into(),
            progress: ProgressDto {
                percent: 40,
                stage: "Copying".into(),
            },
            created_at: "t0".into(),
            ..WorkflowDto::default()
        };
        let text = render_list(&WorkflowListDto {
            workflows: vec![w.clone()],
            next_page_token: "7".into(),
        });
        assert_eq!(
            text,
            "ID  TYPE                STATE    PROGRESS       CREATED\nw1  thick clone volume  Running  40% (Copying)  t0\nmore: --page-token 7\n"
        );
        assert!(render(&w).contains("Ended:     -\n"), "{}", render(&w));
    }
}
