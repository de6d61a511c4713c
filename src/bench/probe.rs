//! What the benchmark reads about processes and folders, from `/proc` and the file system:
//! CPU time of a process and of its thread groups, CPU per request, peak RSS inputs and bytes
//! on disk. Linux only; an unreadable figure reads as zero.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// User plus system CPU time of a process (`self` for this one), all threads, from
/// `/proc/<pid>/stat` (fields 14 and 15, in clock ticks of 10 ms: Linux's `USER_HZ` is 100).
pub(super) fn cpu_time_of(pid: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    stat_cpu(&stat)
}

/// User plus system CPU time from the text of a `stat` file (a process's or a thread's).
fn stat_cpu(stat: &str) -> Duration {
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // `rest` starts at field 3, so fields 14 and 15 are at 11 and 12.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Where the gateway's CPU goes, by thread name: the async runtime (HTTP, API, dispatcher
/// workers, provider HTTP client), the journal's committer (sled writes of accepts, appends,
/// `fdatasync`), its checkpoint thread (sled flushes), the saver (sled writes of the
/// dispatcher's saves), sled's own threads (its I/O pool and
/// log flusher), and the simulated providers (the sandbox runs them on threads of their own).
/// Linux keeps the first 15 bytes of a thread's name.
const THREAD_GROUPS: [(&str, &str); 8] = [
    ("tokio-rt-worker", "runtime"),
    ("tokio-runtime-w", "runtime"),
    ("lifeboat-journa", "journal"),
    ("lifeboat-checkp", "checkpoint"),
    ("lifeboat-saver", "saver"),
    ("sled-io", "sled"),
    ("log flusher", "sled"),
    ("lifeboat-sim", "simulated_providers"),
];

/// CPU time per thread group of a process (see [`THREAD_GROUPS`]; the rest is `other`), from
/// `/proc/<pid>/task/*/stat`. A thread that ends between two readings takes its time with
/// it, so the groups may add up to a little less than [`cpu_time_of`].
pub(super) fn thread_cpu_of(pid: &str) -> BTreeMap<&'static str, Duration> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let name = stat
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map(|(n, _)| n)
            .unwrap_or("");
        let group = THREAD_GROUPS
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix))
            .map(|(_, g)| *g)
            .unwrap_or("other");
        *out.entry(group).or_default() += stat_cpu(&stat);
    }
    out
}

/// CPU microseconds per request for each thread group, between two [`thread_cpu_of`] readings.
pub(super) fn threads_us_per_request(
    before: &BTreeMap<&'static str, Duration>,
    after: &BTreeMap<&'static str, Duration>,
    requests: u64,
) -> Value {
    let mut out = serde_json::Map::new();
    for (group, t) in after {
        let spent = t.saturating_sub(before.get(group).copied().unwrap_or_default());
        out.insert(
            (*group).to_string(),
            json!(cpu_us_per_request(spent, requests)),
        );
    }
    Value::Object(out)
}

/// CPU microseconds per request, for `requests` done in `cpu`.
pub(super) fn cpu_us_per_request(cpu: Duration, requests: u64) -> f64 {
    (cpu.as_secs_f64() * 1e6 / requests.max(1) as f64 * 10.0).round() / 10.0
}

pub(super) fn bytes_on_disk(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 1e2
}
