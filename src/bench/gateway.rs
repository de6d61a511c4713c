//! The gateway under test: a `lifeboat sandbox` child process (this same binary) with its
//! store on disk, and the calls the phases make to it: the API, the sandbox controls, the
//! load generator pointed at it, and its CPU and memory as `/proc` tells them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use secrecy::ExposeSecret;

use super::cpucap::{self, CpuGroup};
use super::load::{self, Conn, LoadResult, Until};
use super::pg::BenchDb;
use super::probe::{bytes_on_disk, cpu_time_of, thread_cpu_of};
use crate::sandbox::{ADMIN_TOKEN, API_KEY};

/// Where a phase's sandbox keeps its store: a data folder, and with `--store` a database of
/// its own (the folder then holds nothing of the store).
pub(super) struct Place {
    pub(super) dir: PathBuf,
    pub(super) db: Option<BenchDb>,
}

impl Place {
    /// A delivering sandbox paced at the providers' rates.
    pub(super) async fn start_paced(&self) -> Result<Gateway, String> {
        Gateway::start_paced(&self.dir, self.db.as_ref()).await
    }

    pub(super) async fn start(&self, hold: bool) -> Result<Gateway, String> {
        Gateway::start(&self.dir, self.db.as_ref(), hold).await
    }

    /// Bytes the store takes: the folder on disk, or the database on the server.
    pub(super) async fn bytes(&self) -> Result<u64, String> {
        match &self.db {
            Some(db) => db.size_bytes().await,
            None => Ok(bytes_on_disk(&self.dir)),
        }
    }
}

/// A `lifeboat sandbox` child process.
pub(super) struct Gateway {
    child: Child,
    /// With `--instance-cpu`: the group capping its CPU (after `child`: dropped once the
    /// child is being killed).
    _cpu: Option<CpuGroup>,
    pub(super) addr: SocketAddr,
    pid: u32,
}

impl Gateway {
    /// A sandbox without events endpoints (the phases measure notifications alone).
    pub(super) async fn start(
        data: &Path,
        db: Option<&BenchDb>,
        hold: bool,
    ) -> Result<Gateway, String> {
        Self::start_with(data, db, hold, &["--events-off"]).await
    }

    /// A sandbox started with these extra arguments (`[]`: events to its own receiver).
    pub(super) async fn start_with(
        data: &Path,
        db: Option<&BenchDb>,
        hold: bool,
        extra: &[&str],
    ) -> Result<Gateway, String> {
        let mut args = vec!["--unpaced"];
        args.extend_from_slice(extra);
        Self::spawn(data, db, hold, &args).await
    }

    /// A delivering sandbox whose channels are paced at the providers' real rates (the
    /// default of `lifeboat sandbox`), without events endpoints.
    pub(super) async fn start_paced(data: &Path, db: Option<&BenchDb>) -> Result<Gateway, String> {
        Self::spawn(data, db, false, &["--events-off"]).await
    }

    async fn spawn(
        data: &Path,
        db: Option<&BenchDb>,
        hold: bool,
        extra: &[&str],
    ) -> Result<Gateway, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        let cpu = cpucap::next_group()?;
        let mut cmd = match &cpu {
            None => Command::new(exe),
            Some(group) => {
                // The shell joins the group, then becomes the gateway (same pid).
                let mut cmd = Command::new("sh");
                cmd.args(["-c", r#"echo $$ > "$1" && shift && exec "$@""#, "sh"])
                    .arg(group.procs())
                    .arg(exe);
                cmd
            }
        };
        // The database's URL through the environment: a command line is visible to every user.
        match db {
            Some(db) => cmd.env("LIFEBOAT_SANDBOX_STORE_URL", db.url().expose_secret()),
            None => cmd.env_remove("LIFEBOAT_SANDBOX_STORE_URL"),
        };
        cmd.args(["sandbox", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if hold {
            cmd.arg("--hold-deliveries");
        }
        cmd.args(extra);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the sandbox: {e}"))?;
        let pid = child.id().unwrap_or_default();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("lifeboat listening on http://") {
                    return url.trim().parse::<SocketAddr>().ok();
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or("the sandbox did not start")?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Gateway {
            child,
            _cpu: cpu,
            addr,
            pid,
        })
    }

    pub(super) async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let mut conn = Conn::open(self.addr).await.map_err(|e| e.to_string())?;
        let body = body.map(|b| b.to_string());
        let reply = conn
            .call(&load::request(method, path, token, body.as_deref()))
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        Ok((
            reply.status,
            serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
        ))
    }

    pub(super) async fn expect(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let (status, value) = self.call(method, path, token, body).await?;
        if !(200..300).contains(&status) {
            return Err(format!("{method} {path} answered {status}: {value}"));
        }
        Ok(value)
    }

    /// A contact with WhatsApp and Telegram addresses and consent on both.
    pub(super) async fn setup_contact(&self) -> Result<(), String> {
        self.expect(
            "PUT",
            "/v1/contacts/bench",
            API_KEY,
            Some(json!({"whatsapp": "+48600100200", "telegram": "5551234"})),
        )
        .await?;
        for channel in ["whatsapp", "telegram"] {
            self.expect(
                "PUT",
                &format!("/v1/contacts/bench/consents/{channel}"),
                API_KEY,
                Some(json!({"status": "granted", "source": "bench"})),
            )
            .await?;
        }
        Ok(())
    }

    pub(super) async fn provider(&self, channel: &str) -> Result<Value, String> {
        self.expect(
            "GET",
            &format!("/sandbox/providers/{channel}"),
            ADMIN_TOKEN,
            None,
        )
        .await
    }

    /// How many messages the simulated provider of `channel` has accepted.
    pub(super) async fn received_count(&self, channel: &str) -> Result<u64, String> {
        Ok(self.provider(channel).await?["received"]
            .as_u64()
            .unwrap_or(0))
    }

    /// The messages the simulated provider of `channel` has accepted, oldest first.
    pub(super) async fn received(&self, channel: &str) -> Result<Value, String> {
        self.expect(
            "GET",
            &format!("/sandbox/providers/{channel}/received"),
            ADMIN_TOKEN,
            None,
        )
        .await
    }

    /// Forgets what the simulated provider of `channel` has accepted.
    pub(super) async fn clear_received(&self, channel: &str) -> Result<(), String> {
        self.expect(
            "DELETE",
            &format!("/sandbox/providers/{channel}/received"),
            ADMIN_TOKEN,
            None,
        )
        .await
        .map(drop)
    }

    /// CPU time the gateway process has used so far (all its threads, user and system).
    pub(super) fn cpu_time(&self) -> Duration {
        cpu_time_of(&self.pid.to_string())
    }

    /// CPU time the gateway process has used so far, per thread group.
    pub(super) fn thread_cpu(&self) -> BTreeMap<&'static str, Duration> {
        thread_cpu_of(&self.pid.to_string())
    }

    pub(super) fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    }

    pub(super) async fn terminate(mut self) -> Duration {
        let t0 = Instant::now();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let _ = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        t0.elapsed()
    }
}

pub(super) fn notify_request(text: &str) -> Vec<u8> {
    load::request(
        "POST",
        "/v1/notifications",
        API_KEY,
        Some(&format!(r#"{{"contact_id":"bench","text":"{text}"}}"#)),
    )
}

pub(super) async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> Result<Duration, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let t0 = Instant::now();
    loop {
        if check().await? {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return Err(format!("gave up after {}s", limit.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(super) async fn load_phase(
    gw: &Gateway,
    clients: usize,
    until: Until,
    keep: bool,
    prefix: &'static str,
    progress: Option<Arc<AtomicU64>>,
) -> LoadResult {
    let make: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync> =
        Arc::new(move |n| notify_request(&format!("{prefix} {n}")));
    load::run(gw.addr, clients, until, 202, keep, make, progress).await
}
