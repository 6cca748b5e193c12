//! Outages fail fast and recover (issue 17, findings 5, 6, 7, 10): unroutable events become
//! dead letters instead of being retried for ever, the hub serves `/healthz` with the broker
//! down, `/readyz` and ingress answer 503 quickly when the database stops, a hanging Zammad
//! does not stall unrelated ingress on SQLite, and a kill -9 on embedded defaults loses its
//! leases within seconds.

use crate::support;

use drehkreuz::config::{BusKind, Config};
use drehkreuz::runtime::Hub;
use drehkreuz::store::{deadletter, outbox, Db};
use secrecy::SecretString;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn envelope(event_type: &str, id: &str, data: serde_json::Value) -> canonical::Envelope {
    canonical::Envelope::new("/test", event_type, id, "1", chrono::Utc::now(), &data)
        .expect("envelope")
}

async fn admin_token(db: &Db) -> String {
    drehkreuz::access::create_token(db, "test admin", &drehkreuz::access::Role::Admin, "test")
        .await
        .expect("token")
        .token
}

struct Running {
    base: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    admin: String,
}

async fn start(mut cfg: Config) -> Running {
    let port = free_port();
    cfg.http.listen = format!("127.0.0.1:{port}");
    cfg.hub.shutdown_grace_secs = 3;
    let hub = Hub::build(cfg).await.expect("build hub");
    let admin = admin_token(&hub.db).await;
    let stop = CancellationToken::new();
    let t = stop.clone();
    let task = tokio::spawn(async move { hub.run(t).await });
    let base = format!("http://127.0.0.1:{port}");
    support::eventually(Duration::from_secs(10), "server up", || async {
        reqwest::get(format!("{base}/healthz")).await.is_ok()
    })
    .await;
    Running {
        base,
        stop,
        task,
        admin,
    }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("stops in time");
        r.expect("join").expect("hub ran");
    }
}

fn ingress_event(n: usize) -> serde_json::Value {
    serde_json::json!({"specversion": "1.0", "id": format!("gr-{n}"), "source": "/warehouse/lager-1",
        "type": "goods_receipt.received", "data": {"n": n}})
}

/// Relays one unroutable event and checks it became a dead letter with the reason.
async fn unroutable_is_dead_lettered(cfg: &Config, db: &Db) {
    let bus = drehkreuz::bus::from_config(cfg, db).await.expect("bus");
    let spec = drehkreuz::bus::ConsumerSpec::new("bound-one", &["bound.type"]);
    bus.declare(std::slice::from_ref(&spec))
        .await
        .expect("declare");
    let ev = envelope("nobody.binds", "u-1", serde_json::json!({"x": 1}));
    outbox::enqueue_all(db, std::slice::from_ref(&ev))
        .await
        .expect("enqueue");
    let relay = drehkreuz::relay::Relay::new(
        db.clone(),
        bus.clone(),
        std::sync::Arc::new(tokio::sync::Notify::new()),
        Duration::from_millis(20),
        vec![10],
    );
    relay.relay_once().await.expect("relay");
    assert_eq!(
        outbox::backlog(db).await.expect("backlog"),
        0,
        "not retried: it left the outbox after the first unroutable return"
    );
    let dead = deadletter::list(db, None, false, 10).await.expect("list");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].consumer, drehkreuz::relay::DEAD_LETTER_CONSUMER);
    assert_eq!(dead[0].message_id, ev.id);
    assert_eq!(dead[0].reason, "unroutable: no consumer binds nobody.binds");
    // A second relay pass publishes nothing again.
    assert_eq!(relay.relay_once().await.expect("relay"), 0);
    assert_eq!(
        deadletter::list(db, None, false, 10)
            .await
            .expect("list")
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_events_are_dead_lettered_on_embedded_and_listed_by_the_cli() {
    let (db, url, _dir) = support::fresh_sqlite().await;
    let cfg = support::test_config(BusKind::Embedded, &url);
    unroutable_is_dead_lettered(&cfg, &db).await;
    // Visible in `drehkreuz dlq list`.
    let out = Command::new(env!("CARGO_BIN_EXE_drehkreuz"))
        .args(["dlq", "list"])
        .env(
            "DREHKREUZ_DATABASE_URL",
            secrecy::ExposeSecret::expose_secret(&url),
        )
        .env_remove("DREHKREUZ_AMQP_URL")
        .output()
        .expect("run dlq list");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("unroutable: no consumer binds nobody.binds"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_events_are_dead_lettered_on_rabbitmq() {
    let Some(vhost) = support::rabbit_vhost().await else {
        return;
    };
    let (db, url, _dir) = support::fresh_sqlite().await;
    let mut cfg = support::test_config(BusKind::Rabbitmq, &url);
    vhost.configure(&mut cfg);
    unroutable_is_dead_lettered(&cfg, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_serves_health_while_the_broker_is_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = SecretString::from(format!("sqlite://{}/hub.db?mode=rwc", dir.path().display()));
    let mut cfg = support::test_config(BusKind::Rabbitmq, &url);
    // Nothing listens there.
    cfg.bus.amqp_url = Some(SecretString::from(format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f",
        free_port()
    )));
    let hub = start(cfg).await;
    let c = reqwest::Client::new();
    let t = Instant::now();
    let r = c
        .get(format!("{}/healthz", hub.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{}/readyz", hub.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["bus"]["kind"], "rabbitmq", "{body}");
    assert_eq!(body["status"], 503, "a problem document: {body}");
    assert_eq!(body["bus"]["ready"], false);
    assert_eq!(body["store"]["ok"], true);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Ingress still lands in the outbox (the relay publishes once the broker is back).
    let t = Instant::now();
    let r = c
        .post(format!("{}/api/v1/events", hub.base))
        .bearer_auth(&hub.admin)
        .json(&ingress_event(1))
        .send()
        .await
        .expect("post");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_ne!(r.status(), 503, "the store is up: the outbox takes it");
    hub.stop().await;
}

/// A throwaway PostgreSQL server of our own (the shared one must never be stopped).
struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
    as_root: bool,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl OwnPostgres {
    fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let bin = format!("{PG_BIN}/{program}");
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &bin]).args(args);
            c
        } else {
            let mut c = Command::new(bin);
            c.args(args);
            c
        }
    }

    fn start() -> Result<Self, String> {
        if !std::path::Path::new(PG_BIN).join("initdb").exists() {
            return Err(format!("{PG_BIN}/initdb not found"));
        }
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| e.to_string())?;
        let as_root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let me = Self {
            dir,
            port: free_port(),
            as_root,
        };
        if as_root {
            let ok = Command::new("chown")
                .args(["-R", "postgres", &me.dir.path().display().to_string()])
                .status()
                .map_err(|e| e.to_string())?;
            if !ok.success() {
                return Err("chown failed".into());
            }
        }
        let data = me.data();
        let out = me
            .cmd(
                "initdb",
                &["-D", &data, "-U", "postgres", "--auth=trust", "-N"],
            )
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)));
        }
        me.pg_ctl_start()?;
        Ok(me)
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.path().display())
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = format!("{}/log", self.dir.path().display());
        let out = self
            .cmd(
                "pg_ctl",
                &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
            )
            .stdout(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "pg_ctl start: {} {}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        Ok(())
    }

    fn stop(&self) {
        let _ = self
            .cmd(
                "pg_ctl",
                &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
            )
            .stdout(Stdio::null())
            .status();
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_ingress_answer_503_fast_when_postgres_stops() {
    let pg = match OwnPostgres::start() {
        Ok(pg) => pg,
        Err(e) => {
            support::missing("a throwaway PostgreSQL (initdb/pg_ctl)", &e);
            return;
        }
    };
    let url = SecretString::from(pg.url());
    let cfg = support::test_config(BusKind::Embedded, &url);
    let hub = start(cfg).await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let r = c
        .get(format!("{}/readyz", hub.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{}/api/v1/events", hub.base))
        .bearer_auth(&hub.admin)
        .json(&ingress_event(1))
        .send()
        .await
        .expect("post");
    assert_ne!(r.status(), 503);

    pg.stop();
    for round in 0..3 {
        let t = Instant::now();
        let r = c
            .get(format!("{}/readyz", hub.base))
            .send()
            .await
            .expect("readyz answers");
        let took = t.elapsed();
        assert_eq!(r.status(), 503, "round {round}");
        assert!(took < Duration::from_secs(2), "round {round}: {took:?}");
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["store"]["ok"], false, "{body}");

        // Ingress: 503 problem with Retry-After, within the acquire timeout (3 s) + margin.
        let t = Instant::now();
        let r = c
            .post(format!("{}/api/v1/events", hub.base))
            .bearer_auth(&hub.admin)
            .json(&ingress_event(10 + round))
            .send()
            .await
            .expect("ingress answers");
        let took = t.elapsed();
        assert_eq!(r.status(), 503, "round {round}");
        assert!(took < Duration::from_secs(5), "round {round}: {took:?}");
        assert!(r.headers().contains_key("retry-after"));
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }

    // Back up: ready again.
    pg.pg_ctl_start().expect("restart postgres");
    support::eventually(Duration::from_secs(15), "ready again", || {
        let c = c.clone();
        let base = hub.base.clone();
        async move {
            c.get(format!("{base}/readyz"))
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        }
    })
    .await;
    hub.stop().await;
}

/// A "Zammad" that accepts connections and never answers.
async fn hanging_server() -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (format!("http://{addr}"), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_does_not_stall_while_zammad_hangs_on_embedded_defaults() {
    let (zammad_url, zammad) = hanging_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::default();
    cfg.hub.data_dir = dir.path().to_path_buf();
    cfg.schedule.clear();
    cfg.zammad = Some(
        toml::from_str(&format!(
            "base_url = \"{zammad_url}\"\ntoken = \"zammad-token\"\nwebhook_secret = \"s\""
        ))
        .expect("zammad section"),
    );
    // Five pending webhook signals for the zammad-sync consumer.
    {
        let db = Db::open(&cfg.database_url(), 2).await.expect("db");
        let signals: Vec<_> = (1..=5)
            .map(|i| {
                canonical::Envelope::new(
                    "/zammad",
                    "zammad.ticket_changed",
                    &i.to_string(),
                    "1",
                    chrono::Utc::now(),
                    &serde_json::json!({"ticket_id": i.to_string()}),
                )
                .expect("envelope")
            })
            .collect();
        outbox::enqueue_all(&db, &signals).await.expect("enqueue");
        db.pool.close().await;
    }
    let hub = start(cfg).await;
    // Let the consumer pick the signals up and hang on Zammad.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    for n in 0..10 {
        let t = Instant::now();
        let r = c
            .post(format!("{}/api/v1/events", hub.base))
            .bearer_auth(&hub.admin)
            .json(&ingress_event(100 + n))
            .send()
            .await
            .expect("ingress answers");
        let took = t.elapsed();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert_ne!(status, 503, "request {n}: {body}");
        assert!(!body.contains("database is locked"), "request {n}: {body}");
        assert!(took < Duration::from_secs(1), "request {n} took {took:?}");
    }
    hub.stop().await;
    zammad.abort();
}

fn spawn_hub_process(data_dir: &std::path::Path, port: u16) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_drehkreuz"))
        .arg("run")
        .env("DREHKREUZ_DATA_DIR", data_dir)
        .env("DREHKREUZ_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("DREHKREUZ_BUS__LEASE_MS", "2000")
        .env("DREHKREUZ_BUS__POLL_INTERVAL_MS", "20")
        .env_remove("DREHKREUZ_DATABASE_URL")
        .env_remove("DREHKREUZ_AMQP_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn drehkreuz")
}

async fn count(db: &Db, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backlog_flows_again_within_the_lease_after_kill_9() {
    const N: usize = 600;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::default();
    cfg.hub.data_dir = dir.path().to_path_buf();
    let db = Db::open(&cfg.database_url(), 2).await.expect("db");
    // A backlog for the intake consumer (`usage.*`); unknown usage is dead-lettered, which
    // settles it as well as applying would.
    let events: Vec<_> = (0..N)
        .map(|i| {
            envelope(
                "usage.recorded",
                &format!("b-{i}"),
                serde_json::json!({"i": i}),
            )
        })
        .collect();
    outbox::enqueue_all(&db, &events).await.expect("enqueue");

    let port = free_port();
    let mut child = spawn_hub_process(dir.path(), port);
    // Kill -9 as soon as work is under way.
    let c = drehkreuz::intake::CONSUMER;
    let settled = &format!(
        "SELECT COUNT(*) FROM (SELECT message_id FROM inbox WHERE consumer = '{c}' \
         UNION SELECT message_id FROM dead_letters WHERE consumer = '{c}') AS settled"
    );
    let leased_sql = || {
        format!(
            "SELECT COUNT(*) FROM bus_queue WHERE locked_until > {}",
            drehkreuz::store::now_ms()
        )
    };
    let started = Instant::now();
    while count(&db, &leased_sql()).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the hub never leased work"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    let at_kill = count(&db, settled).await;
    let leased = count(&db, &leased_sql()).await;
    eprintln!("at kill: {at_kill} of {N} settled, {leased} rows leased by the dead process");
    assert!(
        leased > 0,
        "killed mid-work: rows are still leased by the dead process"
    );

    let restarted = Instant::now();
    let mut child = spawn_hub_process(dir.path(), free_port());
    // Lease (2 s) + margin for start-up and the rest of the backlog on a busy machine.
    let bound = Duration::from_secs(2 + 13);
    let result = tokio::time::timeout(bound, async {
        loop {
            let done = count(&db, settled).await;
            let queued = count(&db, "SELECT COUNT(*) FROM bus_queue").await;
            let pending = count(&db, "SELECT COUNT(*) FROM outbox_pending").await;
            if done as usize >= N && queued == 0 && pending == 0 {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let Ok(done) = result else {
        let diag = format!(
            "settled {}, queued {}, leased {}, outbox pending {}, dead letters {:?}",
            count(&db, settled).await,
            count(&db, "SELECT COUNT(*) FROM bus_queue").await,
            count(
                &db,
                &format!(
                    "SELECT COUNT(*) FROM bus_queue WHERE locked_until > {}",
                    drehkreuz::store::now_ms()
                )
            )
            .await,
            count(&db, "SELECT COUNT(*) FROM outbox_pending").await,
            sqlx::query_scalar::<_, String>(
                "SELECT consumer || ': ' || reason FROM dead_letters LIMIT 3"
            )
            .fetch_all(&db.pool)
            .await
            .unwrap_or_default(),
        );
        panic!(
            "backlog did not drain within {bound:?} of the restart ({:?}): {diag}",
            restarted.elapsed()
        )
    };
    // Every message settled (a dead letter may repeat after a crash: at-least-once).
    assert_eq!(done as usize, N, "every message settled");
}
