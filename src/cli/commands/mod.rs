//! The commands: one module per resource, sharing the run [`Context`], the
//! name-or-UUID lookups and the argument parsers here.

pub mod clone;
pub mod cluster;
pub mod project;
pub mod qos;
pub mod scrub;
pub mod snapshot;
pub mod volume;
pub mod workflow;

use std::io::Write;
use std::time::{Duration, Instant};

use mgmt_api::dto::{LabelDto, SnapshotDto, VolumeDto};
use reqwest::{Method, StatusCode};
use uuid::Uuid;

use super::client::{Call, Client, ClientError, Reply};
use super::table;
use super::{Format, EXIT_API_ERROR, EXIT_USAGE};

/// What every command works with.
pub struct Context<'a> {
    /// The connection to keeld.
    pub client: &'a Client,
    /// The project of volumes and snapshots (`--project`).
    pub project: &'a str,
    /// How to print (`-o`).
    pub format: Format,
    /// Where results go (stdout).
    pub out: &'a mut dyn Write,
}

impl Context<'_> {
    /// Prints a reply: its JSON as received with `-o json`, else `render`'s text.
    pub fn show(
        &mut self,
        reply: &Reply,
        render: impl FnOnce(&Reply) -> Result<String, CommandError>,
    ) -> Result<(), CommandError> {
        let text = match self.format {
            Format::Json => pretty(reply)?,
            Format::Table => render(reply)?,
        };
        self.print(&text)
    }

    /// Prints text, adding a final newline if it lacks one.
    pub fn print(&mut self, text: &str) -> Result<(), CommandError> {
        self.out
            .write_all(text.as_bytes())
            .map_err(CommandError::Stdout)?;
        if !text.ends_with('\n') {
            self.out.write_all(b"\n").map_err(CommandError::Stdout)?;
        }
        Ok(())
    }

    /// Segments of a project-scoped path: `api/v2/projects/{project}/{rest...}`.
    pub fn project_path<'s>(&'s self, rest: &[&'s str]) -> Vec<&'s str> {
        let mut path = vec!["api", "v2", "projects", self.project];
        path.extend_from_slice(rest);
        path
    }

    /// Finds a volume of the project by UUID or by name.
    pub fn volume(&self, id: &str) -> Result<(Reply, VolumeDto), CommandError> {
        let reply = if Uuid::parse_str(id).is_ok() {
            self.client
                .send(Call::new(Method::GET, &self.project_path(&["volumes", id])))
        } else {
            let call =
                Call::new(Method::GET, &self.project_path(&["volumes", ""])).query("name", id);
            self.client.send(call)
        }?;
        let volume = reply.decode()?;
        Ok((reply, volume))
    }

    /// Finds a snapshot of the project by UUID or by name.
    pub fn snapshot(&self, id: &str) -> Result<(Reply, SnapshotDto), CommandError> {
        let reply = if Uuid::parse_str(id).is_ok() {
            self.client.send(Call::new(
                Method::GET,
                &self.project_path(&["snapshots", id]),
            ))
        } else {
            let call =
                Call::new(Method::GET, &self.project_path(&["snapshots", ""])).query("Name", id);
            self.client.send(call)
        }?;
        let snapshot = reply.decode()?;
        Ok((reply, snapshot))
    }

    /// Polls `GET path` until it answers 404 (a delete finished), at most `limit`.
    pub fn wait_until_gone(
        &self,
        what: &str,
        path: &[&str],
        limit: Duration,
    ) -> Result<(), CommandError> {
        let deadline = Instant::now() + limit;
        loop {
            match self.client.send(Call::new(Method::GET, path)) {
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => return Ok(()),
                Err(e) => return Err(e.into()),
                Ok(_) if Instant::now() >= deadline => {
                    return Err(CommandError::WaitTimedOut {
                        what: what.to_owned(),
                        seconds: limit.as_secs(),
                    })
                }
                Ok(_) => std::thread::sleep(POLL_INTERVAL),
            }
        }
    }
}

/// How often `--wait` asks keeld again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// keeld refused the request or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An ACL change that cannot apply to the volume's current ACL.
    #[error("{0}")]
    Acl(String),
    /// The command line names something in a way the server would reject.
    #[error("{0}")]
    Usage(String),
    /// Nothing has the name the command line gave.
    #[error("no {what} named {name:?}")]
    NotFound {
        /// The kind of thing (`node`).
        what: &'static str,
        /// The name asked for.
        name: String,
    },
    /// `--wait` ran out of time; the operation may still finish.
    #[error(
        "gave up waiting for {what} after {seconds} s; it may still finish (check again later)"
    )]
    WaitTimedOut {
        /// What was awaited.
        what: String,
        /// The limit.
        seconds: u64,
    },
    /// A workflow ended without success.
    #[error("workflow {id} ended {state}: {message}")]
    WorkflowFailed {
        /// Workflow id.
        id: String,
        /// Failed or Canceled.
        state: String,
        /// The workflow's message.
        message: String,
    },
    /// keeld answered with a body that is not JSON where JSON was expected.
    #[error("keeld answered {what} with a body that is not JSON")]
    NotJson {
        /// The request.
        what: String,
    },
    /// Standard output could not be written.
    #[error("cannot write the output: {0}")]
    Stdout(#[source] std::io::Error),
}

impl CommandError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Usage(_) => EXIT_USAGE,
            CommandError::Client(_)
            | CommandError::Acl(_)
            | CommandError::NotFound { .. }
            | CommandError::WaitTimedOut { .. }
            | CommandError::WorkflowFailed { .. }
            | CommandError::NotJson { .. }
            | CommandError::Stdout(_) => EXIT_API_ERROR,
        }
    }
}

/// The reply's JSON, pretty-printed in the server's key order.
pub fn pretty(reply: &Reply) -> Result<String, CommandError> {
    table::pretty_json(&reply.body).ok_or_else(|| CommandError::NotJson {
        what: reply.what.clone(),
    })
}

/// Parses a size argument such as `10GiB`, `1.5GiB`, `512 MiB` or `4096`,
/// exactly as the REST API does (`GiB` is 1024³ bytes, `GB` 1000³).
pub fn parse_size(text: &str) -> Result<u64, String> {
    crate::units::parse_size(text)
        .map_err(|e| format!("{e} (examples: 10GiB, 1.5GiB, 512MiB, 1073741824)"))
}

/// Parses a `key=value` label.
pub fn parse_label(text: &str) -> Result<LabelDto, String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok(LabelDto {
            key: key.to_owned(),
            value: value.to_owned(),
        }),
        _ => Err(format!("{text:?} is not a label: use key=value")),
    }
}

/// Parses a UUID argument (workflow ids).
pub fn parse_uuid(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text).map_err(|_| format!("{text:?} is not a UUID"))
}

/// Labels as `k=v, k2=v2` for tables.
pub fn labels_text(labels: &[LabelDto]) -> String {
    labels
        .iter()
        .map(|l| format!("{}={}", l.key, l.value))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value for a table cell: `-` when empty.
pub fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_as_key_equals_value() {
        assert_eq!(
            parse_label("tier=gold"),
            Ok(LabelDto {
                key: "tier".into(),
                value: "gold".into()
            })
        );
        assert_eq!(
            parse_label("empty="),
            Ok(LabelDto {
                key: "empty".into(),
                value: String::new()
            })
        );
        assert_eq!(parse_label("a=b=c").map(|l| l.value), Ok("b=c".to_owned()));
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=v").is_err());
    }

    #[test]
    fn sizes_parse_with_units_and_explain_failures() {
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        let err = parse_size("10 parsecs").expect_err("bad unit");
        assert!(
            err.contains("unknown unit") && err.contains("examples"),
            "{err}"
        );
    }

    #[test]
    fn empty_cells_show_a_dash() {
        assert_eq!(or_dash(""), "-");
        assert_eq!(
            labels_text(&[LabelDto {
                key: "a".into(),
                value: "1".into()
            }]),
            "a=1"
        );
    }
}
