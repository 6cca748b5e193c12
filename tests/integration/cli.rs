//! The `drehkreuz` binary as an operator uses it: config check, migrate, dlq; output into a
//! pipe closed early, logs into a file.

use std::process::Command;

fn drehkreuz(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_drehkreuz"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DREHKREUZ_DATA_DIR", dir)
        .current_dir(dir);
    c
}

#[test]
fn config_check_prints_effective_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let out = drehkreuz(dir.path())
        .env("DREHKREUZ_AMQP_URL", "amqp://hub:s3cr3t-pw@rabbit:5672/%2f")
        .env("DREHKREUZ_DATABASE_URL", "postgres://hub:db-pw-123@pg/hub")
        .env("DREHKREUZ_BUS__PREFETCH", "100")
        .args(["config", "check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("s3cr3t-pw") && !stdout.contains("db-pw-123"),
        "{stdout}"
    );
    // Redacted by type: the URL keeps its shape, the password is `***`.
    assert!(
        stdout.contains("amqp_url = \"amqp://hub:***@rabbit:5672/%2f\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("url = \"postgres://hub:***@pg/hub\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("kind = \"rabbitmq\""),
        "AMQP URL selects RabbitMQ: {stdout}"
    );
    assert!(
        stdout.contains("prefetch = 100"),
        "nested env override applied: {stdout}"
    );
}

#[test]
fn export_sink_url_credentials_are_redacted_and_never_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.toml");
    std::fs::write(
        &file,
        "[[export]]\nname = \"erp\"\nformats = [\"xrechnung-ubl\"]\n\
         url = \"https://erp-user:sink-pw-42@erp.example/inbox?token=qs-secret-7\"\n",
    )
    .unwrap();
    let out = drehkreuz(dir.path())
        .args(["--config", file.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("sink-pw-42") && !stdout.contains("qs-secret-7"),
        "{stdout}"
    );
    assert!(
        stdout.contains("https://erp-user:***@erp.example/inbox?token=***"),
        "{stdout}"
    );
    // Credentials in the URL and a bearer token: refused, naming the key, printing neither.
    std::fs::write(
        &file,
        "[[export]]\nname = \"erp\"\nformats = [\"xrechnung-ubl\"]\n\
         url = \"https://erp-user:sink-pw-42@erp.example/inbox\"\ntoken = \"tok-99\"\n",
    )
    .unwrap();
    let out = drehkreuz(dir.path())
        .args(["--config", file.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("export[0].url"), "{all}");
    assert!(
        !all.contains("sink-pw-42") && !all.contains("tok-99"),
        "{all}"
    );
}

#[test]
fn config_check_defaults_to_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let out = drehkreuz(dir.path())
        .args(["config", "check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("kind = \"embedded\""), "{stdout}");
    assert!(stdout.contains("drehkreuz.db"), "{stdout}");
}

#[test]
fn invalid_config_file_fails_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[bus]\nprefetchh = 3\n", "prefetchh"),
        ("[bus]\ndelivery_limit = 0\n", "bus.delivery_limit"),
        (
            "[schedule.housekeeping]\ncron = \"every day\"\n",
            "schedule.housekeeping.cron",
        ),
        (
            "[schedule.housekeeping]\ncron = \"0 0 3 * * *\"\ntimezone = \"Mars/Olympus\"\n",
            "schedule.housekeeping.timezone",
        ),
        ("[bus]\nkind = \"rabbitmq\"\n", "bus.amqp_url"),
        ("[http]\nlisten = \"everywhere\"\n", "http.listen"),
        ("[bus\n", "drehkreuz.toml"),
    ];
    for (toml, expected) in cases {
        let file = dir.path().join("drehkreuz.toml");
        std::fs::write(&file, toml).unwrap();
        let out = drehkreuz(dir.path())
            .args(["--config", file.to_str().unwrap(), "config", "check"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{toml} must be rejected");
        assert!(
            stderr.contains(expected),
            "error for {toml:?} should name {expected}: {stderr}"
        );
    }
    let out = drehkreuz(dir.path())
        .args(["--config", "/nonexistent/x.toml", "config", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("file not found"));
}

#[test]
fn migrate_creates_the_embedded_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = drehkreuz(dir.path()).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("drehkreuz.db").exists());
    // Idempotent.
    assert!(drehkreuz(dir.path())
        .arg("migrate")
        .output()
        .unwrap()
        .status
        .success());
}

#[tokio::test]
async fn dlq_list_show_replay() {
    use drehkreuz::store::{deadletter, Db};
    let dir = tempfile::tempdir().unwrap();
    let url = secrecy::SecretString::from(format!(
        "sqlite://{}/drehkreuz.db?mode=rwc",
        dir.path().display()
    ));
    let db = Db::open(&url, 2).await.unwrap();
    let env = canonical::Envelope::new(
        "/t",
        "time_entry.created",
        "7",
        "1",
        chrono::Utc::now(),
        &serde_json::json!({"minutes": 15}),
    )
    .unwrap();
    let mut tx = db.begin().await.unwrap();
    let note = deadletter::DeathNote {
        consumer: "work-intake",
        reason: "`reason` is required for non-billable entry 7",
        attempts: 1,
        first_failure_at: None,
    };
    deadletter::record(&mut tx, &note, &env).await.unwrap();
    tx.commit().await.unwrap();

    let out = drehkreuz(dir.path())
        .args(["dlq", "list"])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("work-intake") && s.contains("`reason` is required"),
        "{s}"
    );
    let out = drehkreuz(dir.path())
        .args(["dlq", "show", "1"])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains(&env.id) && s.contains("\"minutes\": 15"), "{s}");
    let out = drehkreuz(dir.path())
        .args(["dlq", "show", "99"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no dead letter with id 99"));

    let out = drehkreuz(dir.path())
        .args(["dlq", "replay", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let queued: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM bus_queue WHERE consumer = 'work-intake'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(queued, 1, "back in the consumer's queue");
    let out = drehkreuz(dir.path())
        .args(["dlq", "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("no dead letters"));
    let out = drehkreuz(dir.path())
        .args(["dlq", "replay", "1"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("already replayed"));
}

#[test]
fn token_create_list_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let out = drehkreuz(dir.path())
        .args([
            "token",
            "create",
            "--name",
            "Lager Bremen",
            "--role",
            "intake:warehouse",
        ])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = s
        .lines()
        .find_map(|l| l.strip_prefix("token:    "))
        .unwrap()
        .to_string();
    let id = s
        .lines()
        .find_map(|l| l.strip_prefix("token id: "))
        .unwrap()
        .to_string();
    assert!(token.starts_with(&format!("dkt_{id}_")));
    let list = String::from_utf8_lossy(
        &drehkreuz(dir.path())
            .args(["token", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(
        list.contains(&id) && list.contains("intake:warehouse") && !list.contains(&token[21..]),
        "secret never listed: {list}"
    );
    let bad = drehkreuz(dir.path())
        .args(["token", "create", "--name", "x", "--role", "root"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--role"));
    assert!(drehkreuz(dir.path())
        .args(["token", "revoke", &id])
        .output()
        .unwrap()
        .status
        .success());
    let list = String::from_utf8_lossy(
        &drehkreuz(dir.path())
            .args(["token", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(list.contains("revoked"), "{list}");
    let again = drehkreuz(dir.path())
        .args(["token", "revoke", &id])
        .output()
        .unwrap();
    assert!(!again.status.success());
    let audit = String::from_utf8_lossy(
        &drehkreuz(dir.path())
            .args(["audit", "--action", "token.revoke"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(audit.contains(&format!("token:{id}")), "{audit}");
}

#[test]
fn the_documented_full_config_example_is_valid() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .unwrap();
    let start = doc.find("```toml\n").expect("a TOML example") + "```toml\n".len();
    let end = start + doc[start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drehkreuz.toml");
    std::fs::write(&file, &doc[start..end]).unwrap();
    let out = drehkreuz(dir.path())
        .args(["--config", file.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("kind = \"rabbitmq\"") && stdout.contains("consultant_number = 29098"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("secret@"),
        "passwords in URLs are redacted: {stdout}"
    );
}

/// Runs `drehkreuz ARGS` with stdout a pipe whose reading end is closed before the command
/// writes (as `drehkreuz audit | head -0` would): it must exit 0 without a panic.
fn run_into_closed_pipe(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut child = drehkreuz(dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // Something in the audit trail, so `audit` has lines to write.
    for name in ["eins", "zwei", "drei"] {
        let made = drehkreuz(dir.path())
            .args(["token", "create", "--name", name, "--role", "viewer:C-1"])
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    for args in [
        &["audit"][..],
        &["config", "check"][..],
        &["token", "list"][..],
    ] {
        let out = run_into_closed_pipe(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

/// Starts `drehkreuz run` with its logs (stderr) going to a file, waits for the start line,
/// stops it and returns the file's bytes.
fn logs_of_a_running_hub(extra_env: &[(&str, &str)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("hub.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut c = drehkreuz(dir.path());
    c.env("DREHKREUZ_HTTP_LISTEN", "127.0.0.1:0")
        .env("DREHKREUZ_LOG", "info")
        .args(["run"])
        .stdout(std::process::Stdio::null())
        .stderr(log_file);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let logs = loop {
        let logs = std::fs::read(&log_path).unwrap();
        if String::from_utf8_lossy(&logs).contains("is running") {
            break logs;
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "hub did not start: {}",
                String::from_utf8_lossy(&std::fs::read(&log_path).unwrap())
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    };
    let _ = child.kill();
    let _ = child.wait();
    logs
}

#[test]
fn logs_in_a_file_are_plain_text_unless_colour_is_asked_for() {
    let plain = logs_of_a_running_hub(&[]);
    assert!(
        !plain.windows(2).any(|w| w == b"\x1b["),
        "no ANSI codes in a file: {}",
        String::from_utf8_lossy(&plain)
    );
    // The check can see colour codes when there are some.
    let coloured = logs_of_a_running_hub(&[("DREHKREUZ_LOG_COLOR", "always")]);
    assert!(coloured.windows(2).any(|w| w == b"\x1b["));
}

/// The effective `[schedule.*]` of `config check` as (name, cron, timezone, enabled).
fn effective_schedules(stdout: &str) -> Vec<(String, String, String, bool)> {
    let v: toml::Value = toml::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    v["schedule"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(k, s)| {
            (
                k.clone(),
                s["cron"].as_str().unwrap().to_string(),
                s["timezone"].as_str().unwrap().to_string(),
                s["enabled"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn sched(name: &str, cron: &str, enabled: bool) -> (String, String, String, bool) {
    (name.into(), cron.into(), "Europe/Berlin".into(), enabled)
}

/// #11 point 11: one `[schedule.*]` in the file replaces only itself; a new one is added.
#[test]
fn a_configured_schedule_in_the_file_keeps_the_other_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hub.toml");
    std::fs::write(
        &file,
        "[schedule.housekeeping]\ncron = \"0 15 4 * * *\"\n\n\
         [schedule.asset_reminders]\nenabled = false\n",
    )
    .unwrap();
    let out = drehkreuz(dir.path())
        .args(["--config", file.to_str().unwrap(), "config", "check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        effective_schedules(&stdout),
        vec![
            // Only `enabled` given: the default cron and time zone stay.
            sched("asset_reminders", "0 0 7 * * *", false),
            sched("housekeeping", "0 15 4 * * *", true),
            // The monthly invoice run is still there.
            sched("invoice_run", "0 0 6 1 * *", true),
        ]
    );
}

/// #11 point 11, the environment path: `DREHKREUZ_SCHEDULE__<NAME>__<KEY>` likewise.
#[test]
fn a_schedule_from_the_environment_keeps_the_other_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let out = drehkreuz(dir.path())
        .env("DREHKREUZ_SCHEDULE__INVOICE_RUN__CRON", "0 0 5 2 * *")
        .env("DREHKREUZ_SCHEDULE__HOUSEKEEPING__ENABLED", "false")
        .args(["config", "check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        effective_schedules(&stdout),
        vec![
            sched("asset_reminders", "0 0 7 * * *", true),
            sched("housekeeping", "0 30 3 * * *", false),
            sched("invoice_run", "0 0 5 2 * *", true),
        ]
    );
    // A schedule of an unknown job is still refused by `run` (not by config check); a bad
    // cron in an override is refused with the key named.
    let out = drehkreuz(dir.path())
        .env("DREHKREUZ_SCHEDULE__INVOICE_RUN__CRON", "every month")
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("schedule.invoice_run.cron"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
