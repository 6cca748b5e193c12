//! The command line (clap): `run`, `migrate`, `config check`, `dlq list|show|replay`,
//! `token create|list|revoke`, `audit`, `demo`.

use crate::config::Config;
use crate::runtime::{shutdown_on_signals, Hub};
use crate::store::{deadletter, Db};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "drehkreuz",
    version,
    about = "Integration hub for IT service providers: helpdesk, warehouse and accounting over one message bus."
)]
pub struct Cli {
    /// Configuration file (TOML). Without it, embedded defaults plus DREHKREUZ_* variables apply.
    #[arg(long, global = true, env = "DREHKREUZ_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub: HTTP API, consumers, outbox relay and scheduler.
    Run,
    /// Apply the database migrations and exit.
    Migrate,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect and re-inject dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List the audit trail.
    Audit {
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        object: Option<String>,
        /// Only entries at or after this instant (RFC 3339) or date (YYYY-MM-DD, UTC).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Import records from files (through the bus, like any other intake).
    #[command(subcommand)]
    Import(ImportCommand),
    /// Monthly billing: preview, adjust, approve and finalize invoice runs.
    #[command(subcommand, name = "invoice-run")]
    InvoiceRun(RunCommand),
    /// Finalized invoices: show, credit note.
    #[command(subcommand)]
    Invoice(InvoiceCommand),
    /// Export finalized invoices: datev-extf, datev-xml, sap-invoic02, sap-acc-document,
    /// xrechnung-ubl, xrechnung-cii, zugferd.
    Export(ExportArgs),
    /// List the review list: records kept but not processable on their own.
    Review {
        /// Include resolved items.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Push a month of sample data through a fresh embedded hub and write what it produced.
    Demo {
        /// Where to write the results (created if missing).
        #[arg(long, default_value = "./demo-out")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (secrets redacted); fail on an invalid file.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Time entries from a helpdesk without a connector: a JSON array of canonical time
    /// entries or CSV (see docs/intake.md). All rows are checked first; on any error nothing is
    /// imported. The entries become `time_entry.created` events in the outbox; the running hub
    /// publishes and applies them.
    TimeEntries { file: PathBuf },
    /// Master data (seller, number ranges, customers, contracts) from one TOML file
    /// (docs/master-data.md). Everything is checked first; on any error nothing changes.
    MasterData { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Create or recompute the preview run of a period (YYYY-MM).
    Preview {
        #[arg(long)]
        period: String,
        #[arg(long)]
        customer: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write off an entry or a line of a preview run (reason required).
    Adjust {
        run: String,
        #[arg(long, conflicts_with = "line", required_unless_present = "line")]
        entry: Option<String>,
        #[arg(long)]
        line: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Freeze a preview run.
    Approve { run: String },
    /// Number, store and publish the invoices of an approved run.
    Finalize { run: String },
    /// Release held work (beyond a budget cap or a held overdraft) of a finalized run: the
    /// next run of its period bills it. Audited.
    Release {
        run: String,
        #[arg(long)]
        entry: String,
    },
    /// Show a run (JSON).
    Show { run: String },
    /// Write a run's service reports (JSON and HTML) into a directory.
    Reports {
        run: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum InvoiceCommand {
    /// Show an invoice (JSON).
    Show { number: String },
    /// Issue a credit note for an invoice.
    /// Issue a credit note for an invoice: all of it, or the given lines (1-based); with
    /// `--rebill` a correction that reopens exactly the credited lines' work for the next run.
    Credit {
        number: String,
        #[arg(long)]
        reason: String,
        #[arg(long = "line")]
        lines: Vec<usize>,
        #[arg(long)]
        rebill: bool,
    },
}

/// `drehkreuz export FORMAT --run RUN|--invoice NUMBER --out DIR`: manual (re-)export of
/// finalized invoices, written atomically (temp file + rename) with a `MANIFEST.sha256`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// datev-extf, datev-xml, sap-invoic02, sap-acc-document, xrechnung-ubl, xrechnung-cii or zugferd.
    pub format: String,
    #[arg(long, conflicts_with = "invoice", required_unless_present = "invoice")]
    pub run: Option<String>,
    #[arg(long)]
    pub invoice: Option<String>,
    #[arg(long)]
    pub out: PathBuf,
    /// ZUGFeRD profile: en16931 (default) or xrechnung.
    #[arg(long, default_value = "en16931")]
    pub zugferd_profile: String,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; the secret is printed once and only its hash is stored.
    Create {
        /// A name saying who uses it, e.g. "warehouse Lager 1".
        #[arg(long)]
        name: String,
        /// admin, accounting, intake:<source> or viewer:<customer>.
        #[arg(long)]
        role: String,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id; takes effect with the next request.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters (not yet replayed, unless --all).
    List {
        #[arg(long)]
        consumer: Option<String>,
        /// Include dead letters that were replayed.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with its message.
    Show { id: i64 },
    /// Put dead letters back into their consumer's queue.
    Replay {
        /// Dead-letter ids.
        ids: Vec<i64>,
        /// Replay every open dead letter of this consumer.
        #[arg(long)]
        consumer: Option<String>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init_logging(cfg.hub.log_format, cfg.hub.log_color);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli.command, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, cfg: Config) -> anyhow::Result<()> {
    match command {
        Command::Run => {
            let hub = Hub::build(cfg).await?;
            hub.run(shutdown_on_signals()).await
        }
        Command::Migrate => {
            let db = Db::connect(&cfg.database_url(), 2).await?;
            db.migrate().await?;
            crate::outln!("migrations applied ({})", db.backend.name());
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            crate::out!("{}", cfg.redacted());
            Ok(())
        }
        Command::Dlq(cmd) => dlq(cmd, cfg).await,
        Command::Token(cmd) => token(cmd, cfg).await,
        Command::Import(ImportCommand::TimeEntries { file }) => {
            let entries = crate::intake::read_time_entries(&file)?;
            let events = entries
                .iter()
                .map(|e| crate::intake::time_entry_event(e, true))
                .collect::<Result<Vec<_>, _>>()?;
            let db = Db::open(&cfg.database_url(), 2).await?;
            crate::store::outbox::enqueue_all(&db, &events).await?;
            crate::outln!(
                "{} time entries queued for intake (outbox); the running hub applies them",
                events.len()
            );
            Ok(())
        }
        Command::Import(ImportCommand::MasterData { file }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let doc = crate::masterdata::MasterData::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let db = Db::open(&cfg.database_url(), 2).await?;
            let s = crate::masterdata::import(&db, &doc, &crate::access::cli_actor())
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            crate::outln!(
                "imported: seller {}, {} number ranges, {} customers, {} contracts",
                if s.seller { "yes" } else { "no" },
                s.number_ranges,
                s.customers,
                s.contracts
            );
            Ok(())
        }
        Command::InvoiceRun(cmd) => invoice_run(cmd, cfg).await,
        Command::Export(args) => {
            let format: crate::export::ExportFormat =
                args.format.parse().map_err(anyhow::Error::msg)?;
            let db = Db::open(&cfg.database_url(), 2).await?;
            let invoices = match (&args.run, &args.invoice) {
                (Some(r), _) => crate::export::run_invoices(&db, r).await?,
                (None, Some(n)) => vec![crate::billing::run::invoice(&db, n)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no invoice {n}"))?],
                (None, None) => anyhow::bail!("give --run RUN or --invoice NUMBER"),
            };
            let files = if format == crate::export::ExportFormat::DatevExtf {
                let settings = crate::export::datev_settings(&cfg)?;
                crate::export::datev_extf_files(
                    &settings,
                    &invoices,
                    crate::export::sink::deterministic_time(&invoices),
                )?
            } else {
                let settings =
                    crate::export::ExportSettings::from_config(&cfg, &args.zugferd_profile);
                let mut files = Vec::new();
                let mut refused = Vec::new();
                for inv in &invoices {
                    match crate::export::render(format, inv, &settings) {
                        Ok(f) => files.push(f),
                        Err(e) => refused.push(e.to_string()),
                    }
                }
                if !refused.is_empty() {
                    for f in crate::export::write_files(&args.out, &files)? {
                        crate::outln!("wrote {}", f.display());
                    }
                    anyhow::bail!(
                        "{} invoice(s) not exported:\n  {}",
                        refused.len(),
                        refused.join("\n  ")
                    );
                }
                files
            };
            for f in crate::export::write_files(&args.out, &files)? {
                crate::outln!("wrote {}", f.display());
            }
            Ok(())
        }
        Command::Invoice(cmd) => {
            let db = Db::open(&cfg.database_url(), 2).await?;
            match cmd {
                InvoiceCommand::Show { number } => {
                    let inv = crate::billing::run::invoice(&db, &number)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("no invoice {number}"))?;
                    crate::outln!("{}", serde_json::to_string_pretty(&inv)?);
                }
                InvoiceCommand::Credit {
                    number,
                    reason,
                    lines,
                    rebill,
                } => {
                    let note = crate::billing::run::credit_lines(
                        &db,
                        &number,
                        &lines,
                        rebill,
                        &reason,
                        &crate::access::cli_actor(),
                    )
                    .await?;
                    crate::outln!(
                        "credit note {} for {} ({} EUR gross)",
                        note.number,
                        number,
                        note.totals.gross
                    );
                }
            }
            Ok(())
        }
        Command::Review { all, json } => {
            let db = Db::open(&cfg.database_url(), 2).await?;
            let items = crate::store::review::list(&db, all).await?;
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&items)?);
            } else if items.is_empty() {
                crate::outln!("the review list is empty");
            } else {
                for i in items {
                    crate::outln!(
                        "{:>5}  {:<22} {:<10} {:<24} {}{}",
                        i.id,
                        i.kind,
                        i.source,
                        i.record_id,
                        i.reason,
                        if i.resolved_at.is_some() {
                            " (resolved)"
                        } else {
                            ""
                        }
                    );
                }
            }
            Ok(())
        }
        Command::Audit {
            actor,
            action,
            object,
            since,
            limit,
            json,
        } => {
            let since_ms = match since {
                None => None,
                Some(s) => Some(parse_since(&s)?),
            };
            let db = Db::open(&cfg.database_url(), 2).await?;
            let f = crate::store::audit::AuditFilter {
                actor,
                action,
                object,
                since_ms,
                limit,
            };
            let rows = crate::store::audit::list(&db, &f).await?;
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                crate::outln!("no audit entries");
            } else {
                for r in rows {
                    crate::outln!(
                        "{:>6}  {}  {:<28}  {:<24}  {:<28}  {} → {}",
                        r.id,
                        r.at.format("%Y-%m-%d %H:%M:%S"),
                        r.actor,
                        r.action,
                        r.object,
                        r.before
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "-".into()),
                        r.after.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                    );
                }
            }
            Ok(())
        }
        Command::Demo { out } => crate::demo::run(&out).await,
    }
}

async fn invoice_run(cmd: RunCommand, cfg: Config) -> anyhow::Result<()> {
    use crate::billing::run;
    let db = Db::open(&cfg.database_url(), 4).await?;
    let actor = crate::access::cli_actor();
    let print = |r: &run::InvoiceRun| {
        crate::outln!("invoice run {} — period {} — {:?}", r.id, r.period, r.state);
        for t in &r.targets {
            crate::outln!(
                "  {:<10} {:<10} {:>3} lines  net {:>10}  VAT {:>9}  gross {:>10}{}",
                t.customer_id,
                t.contract_id,
                t.rating.lines.len(),
                t.rating.totals.net,
                t.rating.totals.vat,
                t.rating.totals.gross,
                t.invoice_number
                    .as_ref()
                    .map(|n| format!("  → {n}"))
                    .unwrap_or_default()
            );
        }
        for p in &r.problems {
            crate::outln!("  problem: {p}");
        }
    };
    match cmd {
        RunCommand::Preview {
            period,
            customer,
            json,
        } => {
            let period: canonical::work::Period = period
                .parse()
                .map_err(|e| anyhow::anyhow!("--period: {e}"))?;
            let r = run::preview(&db, period, customer.as_deref(), &actor).await?;
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print(&r);
            }
        }
        RunCommand::Adjust {
            run: id,
            entry,
            line,
            reason,
        } => {
            let target = match (entry, line) {
                (Some(e), _) => crate::billing::WriteOffTarget::Entry(e),
                (None, Some(l)) => crate::billing::WriteOffTarget::Line(l),
                (None, None) => anyhow::bail!("give --entry ID or --line KEY"),
            };
            print(&run::adjust(&db, &id, target, &reason, &actor).await?);
        }
        RunCommand::Approve { run: id } => print(&run::approve(&db, &id, &actor).await?),
        RunCommand::Finalize { run: id } => print(&run::finalize(&db, &id, &actor).await?),
        RunCommand::Release { run: id, entry } => {
            let item = run::release(&db, &id, &entry, &actor).await?;
            crate::outln!("released {item}: billable in the next run of its period");
        }
        RunCommand::Show { run: id } => crate::outln!(
            "{}",
            serde_json::to_string_pretty(&run::load(&db, &id).await?)?
        ),
        RunCommand::Reports { run: id, out } => {
            let r = run::load(&db, &id).await?;
            std::fs::create_dir_all(&out)?;
            for t in &r.targets {
                std::fs::write(
                    out.join(format!("{}.json", t.report.id)),
                    serde_json::to_string_pretty(&t.report)?,
                )?;
                std::fs::write(
                    out.join(format!("{}.html", t.report.id)),
                    crate::billing::report::html(&t.report),
                )?;
            }
            crate::outln!(
                "{} service reports written to {}",
                r.targets.len(),
                out.display()
            );
        }
    }
    Ok(())
}

fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| anyhow::anyhow!("--since: expected RFC 3339 or YYYY-MM-DD, got {s:?}"))?;
    Ok(d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0))
}

async fn token(cmd: TokenCommand, cfg: Config) -> anyhow::Result<()> {
    let db = Db::open(&cfg.database_url(), 2).await?;
    let actor = crate::access::cli_actor();
    match cmd {
        TokenCommand::Create { name, role } => {
            let role: crate::access::Role = role
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--role: {e}"))?;
            if name.trim().is_empty() {
                anyhow::bail!("--name must not be empty");
            }
            let t = crate::access::create_token(&db, &name, &role, &actor).await?;
            crate::outln!("token id: {}", t.id);
            crate::outln!("role:     {}", t.role);
            crate::outln!("token:    {}", t.token);
            crate::outln!("(shown once: only its hash is stored)");
        }
        TokenCommand::List { json } => {
            let list = crate::store::tokens::list(&db).await?;
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                crate::outln!("no tokens");
            } else {
                for t in list {
                    crate::outln!(
                        "{}  {:<24}  {:<28}  created {}{}",
                        t.id,
                        t.role,
                        t.name,
                        t.created_at.format("%Y-%m-%d %H:%M"),
                        t.revoked_at
                            .map(|r| format!(", revoked {}", r.format("%Y-%m-%d %H:%M")))
                            .unwrap_or_default()
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            if !crate::access::revoke_token(&db, &id, &actor).await? {
                anyhow::bail!("no active token with id {id}");
            }
            crate::outln!("revoked token {id}");
        }
    }
    Ok(())
}

async fn dlq(cmd: DlqCommand, cfg: Config) -> anyhow::Result<()> {
    let db = Db::open(&cfg.database_url(), 2).await?;
    match cmd {
        DlqCommand::List {
            consumer,
            all,
            limit,
            json,
        } => {
            let rows = deadletter::list(&db, consumer.as_deref(), all, limit).await?;
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                crate::outln!("no dead letters");
            } else {
                crate::outln!(
                    "{:>6}  {:<20}  {:<24}  {:>3}  {:<20}  reason",
                    "id",
                    "consumer",
                    "type",
                    "try",
                    "dead at"
                );
                for r in rows {
                    crate::outln!(
                        "{:>6}  {:<20}  {:<24}  {:>3}  {:<20}  {}{}",
                        r.id,
                        r.consumer,
                        r.routing_key,
                        r.attempts,
                        r.dead_at.format("%Y-%m-%d %H:%M:%S"),
                        r.reason,
                        if r.replayed_at.is_some() {
                            " (replayed)"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        DlqCommand::Show { id } => match deadletter::get(&db, id).await? {
            Some(d) => crate::outln!("{}", serde_json::to_string_pretty(&d)?),
            None => anyhow::bail!("no dead letter with id {id}"),
        },
        DlqCommand::Replay { ids, consumer } => {
            let mut targets = Vec::new();
            for id in ids {
                targets.push(
                    deadletter::get(&db, id)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("no dead letter with id {id}"))?,
                );
            }
            if let Some(c) = consumer {
                targets.extend(deadletter::list(&db, Some(&c), false, i64::MAX).await?);
            }
            if targets.is_empty() {
                anyhow::bail!("nothing to replay: give dead-letter ids or --consumer NAME");
            }
            let bus = crate::bus::from_config(&cfg, &db).await?;
            for d in targets {
                if d.replayed_at.is_some() {
                    crate::outln!("dead letter {} was already replayed; skipped", d.id);
                    continue;
                }
                bus.replay(&d).await?;
                let mut tx = db.begin().await?;
                deadletter::mark_replayed_in(&mut tx, d.id).await?;
                crate::store::audit::record(
                    &mut tx,
                    &crate::store::audit::AuditRecord {
                        actor: &crate::access::cli_actor(),
                        action: "dead_letter.replay",
                        object: &format!("dead_letter:{}", d.id),
                        before: Some(serde_json::json!({ "replayed": false, "consumer": d.consumer, "reason": d.reason })),
                        after: Some(serde_json::json!({ "replayed": true })),
                    },
                )
                .await?;
                tx.commit().await?;
                crate::outln!(
                    "replayed dead letter {} ({} → {})",
                    d.id,
                    d.routing_key,
                    d.consumer
                );
            }
        }
    }
    Ok(())
}
