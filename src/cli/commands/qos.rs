//! `qos-policy create|list|get|update|delete`: named rate limits (IOPS and
//! MB/s, for the volume as a whole or per GiB of its size) that volumes are
//! held to. A policy is global, or usable by one project's volumes only; only
//! a cluster admin creates, changes or deletes one.

use clap::{ArgGroup, Args, Subcommand};
use mgmt_api::dto::{
    CreateQosPolicyRequest, QosLimitDto, QosPolicyDto, QosPolicyListDto, QosRatesDto,
    UpdateQosPolicyRequest,
};
use reqwest::Method;
use uuid::Uuid;

use super::{or_dash, CommandError, Context};
use crate::cli::client::Call;
use crate::cli::table::{details, Table};

/// The ids of the six rate flags, for the argument groups that need "any rate".
const RATE_FLAGS: [&str; 6] = [
    "read_iops",
    "write_iops",
    "total_iops",
    "read_mbps",
    "write_mbps",
    "total_mbps",
];

/// What the PROJECT column shows for a policy every project may use.
pub const GLOBAL: &str = "(global)";

/// `keelctl qos-policy ...`
#[derive(Subcommand, Debug)]
pub enum QosPolicyCommand {
    /// Create a QoS policy (cluster admin only); rates not given are unlimited.
    Create(CreateArgs),
    /// List the QoS policies you can see.
    List,
    /// Show one QoS policy.
    Get {
        /// Policy name or UUID.
        policy: String,
    },
    /// Change a QoS policy's description or rates (cluster admin only); new
    /// rates reach every volume under it before the command returns.
    Update(UpdateArgs),
    /// Delete a QoS policy that no volume or project uses (cluster admin only).
    Delete {
        /// Policy name or UUID.
        policy: String,
    },
}

/// The rates of a policy, shared by `create` and `update`: absent or 0 is
/// unlimited; MB is 10^6 bytes.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
#[command(group(ArgGroup::new("rates").multiple(true).args(RATE_FLAGS)))]
pub struct RateArgs {
    /// The rates are per GiB of each volume's size (they follow its resizes).
    #[arg(long, requires = "rates")]
    pub per_gib: bool,
    /// Read commands per second.
    #[arg(long, value_name = "IOPS")]
    pub read_iops: Option<u64>,
    /// Write commands (writes, write zeroes, deallocates) per second.
    #[arg(long, value_name = "IOPS")]
    pub write_iops: Option<u64>,
    /// Read and write commands together per second.
    #[arg(long, value_name = "IOPS")]
    pub total_iops: Option<u64>,
    /// Megabytes (10^6 bytes) read per second.
    #[arg(long, value_name = "MBPS")]
    pub read_mbps: Option<u64>,
    /// Megabytes written per second.
    #[arg(long, value_name = "MBPS")]
    pub write_mbps: Option<u64>,
    /// Megabytes read and written together per second.
    #[arg(long, value_name = "MBPS")]
    pub total_mbps: Option<u64>,
}

impl RateArgs {
    /// Whether any rate flag was given (an update then replaces all rates).
    pub fn given(&self) -> bool {
        [
            self.read_iops,
            self.write_iops,
            self.total_iops,
            self.read_mbps,
            self.write_mbps,
            self.total_mbps,
        ]
        .iter()
        .any(Option::is_some)
    }

    /// The limit the flags describe, as the API takes it: the rates under
    /// `limitPerGb` with `--per-gib`, else under `limitAbsolute`.
    pub fn limit(&self) -> QosLimitDto {
        let rates = QosRatesDto {
            read_iops: self.read_iops,
            write_iops: self.write_iops,
            total_iops: self.total_iops,
            read_mbps: self.read_mbps,
            write_mbps: self.write_mbps,
            total_mbps: self.total_mbps,
        };
        if self.per_gib {
            QosLimitDto {
                limit_per_gb: Some(rates),
                ..QosLimitDto::default()
            }
        } else {
            QosLimitDto {
                limit_absolute: Some(rates),
                ..QosLimitDto::default()
            }
        }
    }
}

/// `qos-policy create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Name, unique in the cluster: letters, digits, '-', '_', '.'.
    pub name: String,
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
    /// Only volumes of --project may use the policy (default: every project's).
    #[arg(long)]
    pub project_scoped: bool,
    /// The rates.
    #[command(flatten)]
    pub rates: RateArgs,
}

/// `qos-policy update`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("change").required(true).multiple(true)
    .args(RATE_FLAGS).arg("description")))]
pub struct UpdateArgs {
    /// Policy name or UUID.
    pub policy: String,
    /// New free text.
    #[arg(long)]
    pub description: Option<String>,
    /// New rates: when any is given, they replace all of the policy's rates
    /// (those not given become unlimited).
    #[command(flatten)]
    pub rates: RateArgs,
}

/// Runs a `qos-policy` command.
pub fn run(ctx: &mut Context<'_>, command: &QosPolicyCommand) -> Result<(), CommandError> {
    match command {
        QosPolicyCommand::Create(args) => create(ctx, args),
        QosPolicyCommand::List => {
            let reply = ctx.client.send(Call::new(Method::GET, &POLICIES))?;
            ctx.show(&reply, |r| Ok(render_list(&r.decode()?)))
        }
        QosPolicyCommand::Get { policy } => {
            let reply = ctx
                .client
                .send(Call::new(Method::GET, &policy_path(policy)))?;
            ctx.show(&reply, |r| Ok(render(&r.decode()?)))
        }
        QosPolicyCommand::Update(args) => update(ctx, args),
        QosPolicyCommand::Delete { policy } => delete(ctx, policy),
    }
}

/// The flat collection path: policies of every project and the global ones.
const POLICIES: [&str; 3] = ["api", "v2", "qosPolicies"];

/// The path of one policy; keeld takes its name in place of the UUID.
fn policy_path(id: &str) -> [&str; 4] {
    ["api", "v2", "qosPolicies", id]
}

fn create(ctx: &mut Context<'_>, args: &CreateArgs) -> Result<(), CommandError> {
    let body = CreateQosPolicyRequest {
        name: Some(args.name.clone()),
        description: args.description.clone(),
        project_name: args.project_scoped.then(|| ctx.project.to_owned()),
        limit: Some(args.rates.limit()),
    };
    let reply = ctx
        .client
        .send(Call::new(Method::POST, &POLICIES).json(&body))?;
    ctx.show(&reply, |r| Ok(render(&r.decode()?)))
}

fn update(ctx: &mut Context<'_>, args: &UpdateArgs) -> Result<(), CommandError> {
    // No If-Match: nothing is merged into what was read, the new values
    // replace the old ones exactly as given.
    let body = UpdateQosPolicyRequest {
        description: args.description.clone(),
        limit: args.rates.given().then(|| args.rates.limit()),
        ..UpdateQosPolicyRequest::default()
    };
    let path = policy_path(&args.policy);
    let reply = ctx.client.send(Call::new(Method::PUT, &path).json(&body))?;
    ctx.show(&reply, |r| Ok(render(&r.decode()?)))
}

fn delete(ctx: &mut Context<'_>, id: &str) -> Result<(), CommandError> {
    // Looked up first so the message names the policy by name and UUID.
    let found = ctx.client.send(Call::new(Method::GET, &policy_path(id)))?;
    let policy: QosPolicyDto = found.decode()?;
    let reply = ctx
        .client
        .send(Call::new(Method::DELETE, &policy_path(&policy.uuid)))?;
    let text = format!("QoS policy {} ({}) deleted", policy.name, policy.uuid);
    ctx.show(&reply, |_| Ok(text))
}

/// The request fields `(name, uuid)` that name a policy given on the command
/// line: a UUID goes as the UUID, anything else as the name, so either works
/// wherever a volume or project names its policy.
pub fn reference(id: &str) -> (Option<String>, Option<String>) {
    match Uuid::parse_str(id) {
        Ok(uuid) => (None, Some(uuid.to_string())),
        Err(_) => (Some(id.to_owned()), None),
    }
}

/// A policy's scale as shown and its rates (the API sends one kind).
fn scale_and_rates(limit: &QosLimitDto) -> (&'static str, QosRatesDto) {
    match (limit.limit_absolute, limit.limit_per_gb) {
        (Some(rates), _) => ("absolute", rates),
        (None, Some(rates)) => ("per GiB", rates),
        (None, None) => ("-", QosRatesDto::default()),
    }
}

/// A rate as shown: `-` when unlimited (absent or 0).
fn rate_text(rate: Option<u64>) -> String {
    match rate {
        None | Some(0) => "-".to_owned(),
        Some(n) => n.to_string(),
    }
}

/// The six rates, labelled, in the order of the table's columns.
fn labelled_rates(r: &QosRatesDto) -> [(&'static str, String); 6] {
    [
        ("Read IOPS", rate_text(r.read_iops)),
        ("Write IOPS", rate_text(r.write_iops)),
        ("Total IOPS", rate_text(r.total_iops)),
        ("Read MB/s", rate_text(r.read_mbps)),
        ("Write MB/s", rate_text(r.write_mbps)),
        ("Total MB/s", rate_text(r.total_mbps)),
    ]
}

/// The PROJECT cell: the project, or `(global)`.
fn project_text(project: &str) -> String {
    if project.is_empty() {
        GLOBAL.to_owned()
    } else {
        project.to_owned()
    }
}

/// A policy as a `key: value` block.
pub fn render(p: &QosPolicyDto) -> String {
    let (scale, rates) = scale_and_rates(&p.limit);
    let mut fields = vec![
        ("UUID", p.uuid.clone()),
        ("Name", p.name.clone()),
        ("Project", project_text(&p.project_name)),
        ("Description", or_dash(&p.description)),
        ("State", or_dash(&p.state)),
        ("Scale", scale.to_owned()),
    ];
    fields.extend(labelled_rates(&rates));
    fields.push(("ETag", p.etag.clone()));
    details(&fields)
}

/// Policies as a table.
pub fn render_list(list: &QosPolicyListDto) -> String {
    let mut t = Table::new(&[
        "NAME",
        "UUID",
        "PROJECT",
        "SCALE",
        "READ IOPS",
        "WRITE IOPS",
        "TOTAL IOPS",
        "READ MB/S",
        "WRITE MB/S",
        "TOTAL MB/S",
    ]);
    for p in &list.qos_policies {
        let (scale, rates) = scale_and_rates(&p.limit);
        let mut row = vec![
            p.name.clone(),
            p.uuid.clone(),
            project_text(&p.project_name),
            scale.to_owned(),
        ];
        row.extend(labelled_rates(&rates).into_iter().map(|(_, v)| v));
        t.row(row);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<QosPolicyCommand, clap::Error> {
        let cli = Cli::try_parse_from(
            ["keelctl", "qos-policy"]
                .into_iter()
                .chain(args.iter().copied()),
        )?;
        match cli.command {
            Command::QosPolicy(c) => Ok(c),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn policy(name: &str, project: &str, limit: QosLimitDto) -> QosPolicyDto {
        QosPolicyDto {
            uuid: format!("u-{name}"),
            name: name.into(),
            project_name: project.into(),
            state: "Active".into(),
            limit,
            etag: "1".into(),
            ..QosPolicyDto::default()
        }
    }

    #[test]
    fn policies_list_with_scale_project_and_dashes_for_unlimited() {
        let absolute = QosLimitDto {
            limit_absolute: Some(QosRatesDto {
                read_iops: Some(1000),
                total_mbps: Some(200),
                write_iops: Some(0),
                ..QosRatesDto::default()
            }),
            limit_per_gb: None,
        };
        let per_gib = QosLimitDto {
            limit_absolute: None,
            limit_per_gb: Some(QosRatesDto {
                write_iops: Some(10),
                ..QosRatesDto::default()
            }),
        };
        let list = QosPolicyListDto {
            qos_policies: vec![policy("gold", "", absolute), policy("team", "p1", per_gib)],
        };
        assert_eq!(
            render_list(&list),
            "NAME  UUID    PROJECT   SCALE     READ IOPS  WRITE IOPS  TOTAL IOPS  READ MB/S  WRITE MB/S  TOTAL MB/S\n\
             gold  u-gold  (global)  absolute  1000       -           -           -          -           200\n\
             team  u-team  p1        per GiB   -          10          -           -          -           -\n"
        );
    }

    #[test]
    fn a_policy_shows_as_a_block() {
        let limit = QosLimitDto {
            limit_per_gb: Some(QosRatesDto {
                read_mbps: Some(5),
                ..QosRatesDto::default()
            }),
            limit_absolute: None,
        };
        let text = render(&policy("silver", "", limit));
        assert!(text.contains("Project:      (global)\n"), "{text}");
        assert!(text.contains("Description:  -\n"), "{text}");
        assert!(text.contains("Scale:        per GiB\n"), "{text}");
        assert!(text.contains("Read MB/s:    5\n"), "{text}");
        assert!(text.contains("Read IOPS:    -\n"), "{text}");
    }

    #[test]
    fn rate_flags_become_one_kind_of_limit() {
        let QosPolicyCommand::Create(args) =
            parse(&["create", "g", "--read-iops", "7", "--per-gib"]).expect("parses")
        else {
            panic!("not create");
        };
        let limit = args.rates.limit();
        assert_eq!(limit.limit_absolute, None);
        assert_eq!(limit.limit_per_gb.and_then(|r| r.read_iops), Some(7));
        let QosPolicyCommand::Create(args) = parse(&["create", "free"]).expect("parses") else {
            panic!("not create");
        };
        assert!(!args.rates.given() && !args.project_scoped);
        assert_eq!(
            args.rates.limit().limit_absolute,
            Some(QosRatesDto::default())
        );
    }

    #[test]
    fn updates_change_something_and_per_gib_needs_a_rate() {
        assert!(parse(&["update", "g"]).is_err());
        assert!(parse(&["create", "g", "--per-gib"]).is_err());
        assert!(parse(&["update", "g", "--per-gib"]).is_err());
        let QosPolicyCommand::Update(args) =
            parse(&["update", "g", "--description", "d"]).expect("parses")
        else {
            panic!("not update");
        };
        assert!(!args.rates.given());
        assert!(parse(&["update", "g", "--total-mbps", "0"]).is_ok());
    }

    #[test]
    fn a_uuid_names_a_policy_by_uuid_anything_else_by_name() {
        let uuid = "0c5e7a4e-1111-4c55-9f2e-000000000001";
        assert_eq!(reference(uuid), (None, Some(uuid.to_owned())));
        assert_eq!(reference("gold"), (Some("gold".to_owned()), None));
    }
}
