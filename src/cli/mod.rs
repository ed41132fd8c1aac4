//! keelctl, the command-line client of keeld's management REST API: the
//! command tree ([`Cli`]), how a run finds keeld and its credentials
//! ([`connection`]), and the exit codes. It talks to keeld over HTTPS only and
//! reuses `mgmt_api::dto` for every body, so the two cannot drift apart.
//!
//! Exit codes: 0 success, 1 the API or the connection failed, 2 usage error.
//!
//! ```text
//! # On keeld's host: trust its certificate and log in as admin from its data dir.
//! keelctl --data-dir /var/lib/keel volume create db1 --size 10GiB \
//!     --acl nqn.2014-08.org.nvmexpress:uuid:... --label app=db
//! keelctl --data-dir /var/lib/keel volume list
//! # Elsewhere: a token and the certificate, in the environment.
//! export KEEL_ENDPOINT=https://keel1:8443 KEEL_TOKEN=$(keelctl login) # or --user/--password
//! keelctl --cacert keel1.pem -o json volume get db1
//! ```

pub mod client;
pub mod commands;
pub mod table;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;

use client::{Client, ClientError, Connection, Credentials, TlsTrust};
use commands::{CommandError, Context};

/// Exit code when keeld answered with an error or could not be reached.
pub const EXIT_API_ERROR: u8 = 1;
/// Exit code for a malformed command line (the same as clap's).
pub const EXIT_USAGE: u8 = 2;

/// Manage Keel volumes, snapshots, clones and workflows through keeld's REST API.
#[derive(Parser, Debug)]
#[command(name = "keelctl", version, propagate_version = true)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where keeld is, how to trust and authenticate to it, and how to print.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// keeld's REST API.
    #[arg(
        long,
        value_parser = parse_endpoint,
        env = "KEEL_ENDPOINT",
        default_value = "https://127.0.0.1:8443",
        global = true
    )]
    pub endpoint: Url,
    /// keeld's data directory: keelctl trusts its api/tls-cert.pem and, when no
    /// credentials are given, logs in as admin with its api/admin-password.
    #[arg(
        long,
        env = "KEEL_DATA_DIR",
        default_value = "./keel-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// User to log in as (with --password).
    #[arg(long, env = "KEEL_USER", requires = "password", global = true)]
    pub user: Option<String>,
    /// Password of --user (default user: admin).
    #[arg(long, env = "KEEL_PASSWORD", hide_env_values = true, global = true)]
    pub password: Option<String>,
    /// A bearer token from `keelctl login`, used instead of logging in.
    #[arg(
        long,
        env = "KEEL_TOKEN",
        hide_env_values = true,
        global = true,
        conflicts_with = "password"
    )]
    pub token: Option<String>,
    /// PEM certificate to trust for keeld (default: DATA_DIR/api/tls-cert.pem when it exists).
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,
    /// Accept any server certificate (the connection stays encrypted but keeld is not verified).
    #[arg(long, global = true, conflicts_with = "cacert")]
    pub insecure: bool,
    /// Project of the volumes and snapshots.
    #[arg(long, env = "KEEL_PROJECT", default_value = "default", global = true)]
    pub project: String,
    /// Output format: aligned tables for people, or the server's JSON for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table, global = true)]
    pub output: Format,
    /// Seconds to wait for each request.
    #[arg(long = "timeout", value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub timeout_secs: u64,
}

/// How results are printed.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns and `key: value` blocks.
    Table,
    /// The server's JSON answer, pretty-printed, keys in the server's order.
    Json,
}

/// The command tree.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The cluster's identity, endpoints and capacity.
    #[command(subcommand)]
    Cluster(commands::cluster::ClusterCommand),
    /// The storage nodes of the cluster and their state.
    #[command(subcommand, visible_alias = "nodes")]
    Node(commands::cluster::NodeCommand),
    /// List and create projects (the namespaces of volumes and snapshots).
    #[command(subcommand, visible_alias = "projects")]
    Project(commands::project::ProjectCommand),
    /// Create, list, inspect, change, roll back and delete volumes.
    #[command(subcommand, visible_alias = "volumes")]
    Volume(commands::volume::VolumeCommand),
    /// Create, list, inspect and delete snapshots.
    #[command(subcommand, visible_alias = "snapshots")]
    Snapshot(commands::snapshot::SnapshotCommand),
    /// QoS policies: IOPS and MB/s limits volumes are held to (global or per project).
    #[command(subcommand, visible_alias = "qos-policies")]
    QosPolicy(commands::qos::QosPolicyCommand),
    /// Thin clones: new volumes that share a snapshot's data.
    #[command(subcommand)]
    Clone(commands::clone::CloneCommand),
    /// Thick clones: full copies of a snapshot, made by a workflow.
    #[command(subcommand)]
    Thickclone(commands::workflow::ThickCloneCommand),
    /// The background pass that verifies every stored block: start one, or see
    /// progress and damaged blocks per volume.
    #[command(subcommand)]
    Scrub(commands::scrub::ScrubCommand),
    /// Long-running operations (thick clones).
    #[command(subcommand, visible_alias = "workflows")]
    Workflow(commands::workflow::WorkflowCommand),
    /// Log in and print a bearer token for KEEL_TOKEN / --token.
    Login,
}

/// The command tree as parsed and shown. The global options are hidden from
/// clap's own option lists, which would repeat their fifty lines of help in
/// every subcommand's; `keelctl --help` describes them in a section of its
/// own, and every subcommand's help names them in one line.
pub fn command() -> clap::Command {
    let cmd = <Cli as clap::CommandFactory>::command();
    let globals: Vec<&clap::Arg> = cmd.get_arguments().filter(|a| a.is_global_set()).collect();
    let section = globals_section(&globals);
    let names: Vec<String> = globals.iter().map(|a| flag(a)).collect();
    let note = format!(
        "Global options ({}) go before or after the command; `keelctl --help` describes them.",
        names.join(", ")
    );
    // Hidden before the tree is built, so the copies the build propagates
    // into every subcommand are hidden too (they still parse there).
    cmd.mut_args(|a| if a.is_global_set() { a.hide(true) } else { a })
        .after_help(section)
        .mut_subcommands(|sub| with_note(sub, &note))
}

/// `--long` (or `-s`) of an option.
fn flag(arg: &clap::Arg) -> String {
    match (arg.get_long(), arg.get_short()) {
        (Some(long), _) => format!("--{long}"),
        (None, Some(short)) => format!("-{short}"),
        (None, None) => arg.get_id().to_string(),
    }
}

/// The "Global options" section of `keelctl --help`, from the options' own
/// help, environment variables and defaults.
fn globals_section(globals: &[&clap::Arg]) -> String {
    let lines: Vec<(String, String)> = globals
        .iter()
        .map(|a| {
            let mut left = match a.get_short() {
                Some(short) => format!("-{short}, {}", flag(a)),
                None => format!("    {}", flag(a)),
            };
            if a.get_action().takes_values() {
                let value = a.get_value_names().and_then(|v| v.first()).map_or_else(
                    || a.get_id().to_string().to_uppercase(),
                    ToString::to_string,
                );
                left.push_str(&format!(" <{value}>"));
            }
            let mut right = a.get_help().map(ToString::to_string).unwrap_or_default();
            let values: Vec<String> = a
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_owned())
                .collect();
            if !values.is_empty() {
                right.push_str(&format!(" [possible values: {}]", values.join(", ")));
            }
            if let Some(env) = a.get_env() {
                right.push_str(&format!(" [env: {}]", env.to_string_lossy()));
            }
            let defaults: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|d| d.to_string_lossy().into_owned())
                .collect();
            if !defaults.is_empty() {
                right.push_str(&format!(" [default: {}]", defaults.join(",")));
            }
            (left, right)
        })
        .collect();
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let mut out = String::from("Global options (with any command):\n");
    for (left, right) in lines {
        out.push_str(&format!("  {left:width$}  {right}\n"));
    }
    out
}

/// Gives `cmd` and every command below it the one-line note on the global options.
fn with_note(cmd: clap::Command, note: &str) -> clap::Command {
    cmd.after_help(note.to_owned())
        .mut_subcommands(|sub| with_note(sub, note))
}

/// Parses `args` (the program name first) with [`command`].
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
}

/// Runs keelctl on the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with code 0, usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE));
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run(&cli, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CommandError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = out.flush();
            eprintln!("keelctl: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs one parsed command, printing its result to `out`.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), CommandError> {
    let client = Client::new(connection(&cli.global)?)?;
    let mut ctx = Context {
        client: &client,
        project: &cli.global.project,
        format: cli.global.output,
        out,
    };
    match &cli.command {
        Command::Cluster(c) => commands::cluster::run_cluster(&mut ctx, c),
        Command::Node(c) => commands::cluster::run_node(&mut ctx, c),
        Command::Project(c) => commands::project::run(&mut ctx, c),
        Command::Volume(c) => commands::volume::run(&mut ctx, c),
        Command::Snapshot(c) => commands::snapshot::run(&mut ctx, c),
        Command::QosPolicy(c) => commands::qos::run(&mut ctx, c),
        Command::Clone(c) => commands::clone::run(&mut ctx, c),
        Command::Thickclone(c) => commands::workflow::run_thick_clone(&mut ctx, c),
        Command::Workflow(c) => commands::workflow::run(&mut ctx, c),
        Command::Scrub(c) => commands::scrub::run(&mut ctx, c),
        Command::Login => commands::cluster::run_login(&mut ctx),
    }
}

/// The connection the global options describe: the endpoint, the certificate
/// to trust (explicit, else the data dir's, else web roots) and the credentials
/// (token, else user and password, else the data dir's admin password, else none).
pub fn connection(global: &GlobalArgs) -> Result<Connection, ClientError> {
    let api_dir = global.data_dir.join("api");
    let tls = if global.insecure {
        TlsTrust::AnyCertificate
    } else if let Some(path) = &global.cacert {
        TlsTrust::Pinned(path.clone())
    } else {
        let default = api_dir.join("tls-cert.pem");
        if default.is_file() {
            TlsTrust::Pinned(default)
        } else {
            TlsTrust::WebRoots
        }
    };
    let credentials = match (&global.token, &global.password) {
        (Some(token), _) => Credentials::Token(token.trim().to_owned()),
        (None, Some(password)) => Credentials::Password {
            user: global.user.clone().unwrap_or_else(|| "admin".to_owned()),
            password: password.clone(),
        },
        (None, None) => admin_password(&api_dir.join("admin-password"))?,
    };
    Ok(Connection {
        endpoint: global.endpoint.clone(),
        tls,
        credentials,
        timeout: Duration::from_secs(global.timeout_secs),
    })
}

/// Parses `--endpoint`: an `https://` (or, for a keeld started with
/// `--insecure-http`, `http://`) URL with a host.
pub fn parse_endpoint(text: &str) -> Result<Url, String> {
    let hint = "use https://HOST:PORT, e.g. https://127.0.0.1:8443";
    if !text.contains("://") {
        return Err(format!("{text:?} has no scheme: {hint}"));
    }
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL ({e}): {hint}"))?;
    match url.scheme() {
        "https" | "http" if url.host().is_some() => Ok(url),
        "https" | "http" => Err(format!("{text:?} names no host: {hint}")),
        other => Err(format!("scheme {other:?} is not http or https: {hint}")),
    }
}

fn admin_password(path: &Path) -> Result<Credentials, ClientError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Credentials::AdminPasswordFile {
            path: path.to_path_buf(),
            password: text.trim().to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::Anonymous {
            searched: path.to_path_buf(),
        }),
        Err(source) => Err(ClientError::AdminPasswordUnreadable {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_tree_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn subcommand_help_names_the_global_options_and_the_root_help_describes_them() {
        let help = |args: &[&str]| -> String {
            match parse(args) {
                Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => e.to_string(),
                other => panic!("{args:?} did not print help: {other:?}"),
            }
        };
        let create = help(&["volume", "create", "--help"]);
        assert!(create.contains("--qos-policy <POLICY>"), "{create}");
        assert!(!create.contains("--endpoint <"), "{create}");
        assert!(
            create.contains("Global options (--endpoint, --data-dir"),
            "{create}"
        );
        assert!(create.lines().count() < 40, "{create}");
        let root = help(&["--help"]);
        for option in [
            "--endpoint <ENDPOINT>",
            "--token <TOKEN>",
            "-o, --output <OUTPUT>",
            "[possible values: table, json]",
            "[env: KEEL_PROJECT]",
        ] {
            assert!(root.contains(option), "{option} missing from\n{root}");
        }
        // Hidden from the help, the global options still parse after a subcommand.
        let cli = parse(&["volume", "list", "--endpoint", "https://keel1:8443"]).expect("parses");
        assert_eq!(cli.global.endpoint.as_str(), "https://keel1:8443/");
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        parse_from(std::iter::once("keelctl").chain(args.iter().copied()))
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let cli = parse(&["volume", "list", "-o", "json", "--project", "p1"]).expect("parses");
        assert_eq!(cli.global.output, Format::Json);
        assert_eq!(cli.global.project, "p1");
        let cli = parse(&["-o", "json", "cluster", "info"]).expect("parses");
        assert_eq!(cli.global.output, Format::Json);
    }

    #[test]
    fn usage_errors_exit_with_two() {
        let err = parse(&["volume", "create", "v1", "--size", "ten"]).expect_err("bad size");
        assert_eq!(err.exit_code(), i32::from(EXIT_USAGE));
        assert!(
            err.to_string().contains("size \"ten\" has an unknown unit"),
            "{err}"
        );
        let err = parse(&["--insecure", "--cacert", "x.pem", "login"]).expect_err("conflict");
        assert_eq!(err.exit_code(), i32::from(EXIT_USAGE));
    }

    #[test]
    fn credentials_come_from_the_token_then_the_password_then_the_data_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_str().expect("utf-8");
        let cli = parse(&["--data-dir", data, "login"]).expect("parses");
        let c = connection(&cli.global).expect("connection");
        assert!(matches!(c.credentials, Credentials::Anonymous { .. }));
        assert_eq!(c.tls, TlsTrust::WebRoots);

        std::fs::create_dir(dir.path().join("api")).expect("mkdir");
        std::fs::write(dir.path().join("api/admin-password"), "s3cret\n").expect("write");
        std::fs::write(dir.path().join("api/tls-cert.pem"), "pem").expect("write");
        let c = connection(
            &parse(&["--data-dir", data, "login"])
                .expect("parses")
                .global,
        )
        .expect("connection");
        assert_eq!(
            c.credentials,
            Credentials::AdminPasswordFile {
                path: dir.path().join("api/admin-password"),
                password: "s3cret".into()
            }
        );
        assert_eq!(c.tls, TlsTrust::Pinned(dir.path().join("api/tls-cert.pem")));

        let args = [
            "--data-dir",
            data,
            "--user",
            "bob",
            "--password",
            "pw",
            "login",
        ];
        let c = connection(&parse(&args).expect("parses").global).expect("connection");
        assert_eq!(
            c.credentials,
            Credentials::Password {
                user: "bob".into(),
                password: "pw".into()
            }
        );

        let args = ["--data-dir", data, "--token", "t0k", "--insecure", "login"];
        let c = connection(&parse(&args).expect("parses").global).expect("connection");
        assert_eq!(c.credentials, Credentials::Token("t0k".into()));
        assert_eq!(c.tls, TlsTrust::AnyCertificate);
    }

    #[test]
    fn endpoints_need_an_http_scheme_and_a_host() {
        assert!(parse_endpoint("https://127.0.0.1:8443").is_ok());
        assert!(parse_endpoint("http://[::1]:8080/prefix/").is_ok());
        assert!(parse_endpoint("localhost:8443")
            .expect_err("no scheme")
            .contains("has no scheme"));
        assert!(parse_endpoint("ftp://h")
            .expect_err("ftp")
            .contains("not http"));
        assert!(parse_endpoint("https://").is_err());
    }

    #[test]
    fn a_user_without_a_password_is_a_usage_error() {
        let err = parse(&["--user", "bob", "login"]).expect_err("needs password");
        assert_eq!(err.exit_code(), i32::from(EXIT_USAGE));
    }
}
