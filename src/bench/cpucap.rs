//! `--instance-cpu <cores>`: every gateway the bench starts runs in a control group of its own
//! with a CPU quota of that many cores, as a container with `--cpus` or a Kubernetes CPU limit
//! would give it. On a machine whose few cores the gateways, the load generator and the
//! database share, this is how a second instance brings CPU of its own (as it does on a
//! machine of its own) instead of taking it from the first: one instance and two then compare
//! as a fleet grows, not as two processes fight over the same cores.
//!
//! The gateway is started through `sh`, which writes its own pid into the group and then
//! `exec`s the gateway: the quota is in force before the gateway's runtime starts, so the
//! runtime sizes its worker threads from it (Rust's `available_parallelism` reads the quota).
//! cgroup v2 (`cpu.max`) where the unified hierarchy has the `cpu` controller, else cgroup v1
//! (`cpu.cfs_quota_us`); either needs write access to the hierarchy (root, or a delegated
//! subtree). The group is removed when its gateway is gone.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The CFS period: shorter than the kernel's default 100 ms, so a throttled gateway waits
/// at most a few milliseconds for its next slice rather than up to 100 ms.
const PERIOD_US: u64 = 20_000;

static CORES: OnceLock<f64> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Caps every gateway started from now on at `cores` (once per run). Checks first that a
/// group can be made, so a machine that cannot says so before any phase runs.
pub(super) fn cap_gateways(cores: f64) -> Result<(), String> {
    drop(CpuGroup::create(cores, "check")?);
    let _ = CORES.set(cores);
    Ok(())
}

/// A group for the next gateway, if gateways are capped.
pub(super) fn next_group() -> Result<Option<CpuGroup>, String> {
    match CORES.get() {
        None => Ok(None),
        Some(&cores) => {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            CpuGroup::create(cores, &format!("gw{n}")).map(Some)
        }
    }
}

/// The cap in force, for the figures.
pub(super) fn cores() -> Option<f64> {
    CORES.get().copied()
}

/// A control group holding one gateway, removed on drop.
pub(super) struct CpuGroup {
    dir: PathBuf,
}

impl CpuGroup {
    /// A new group named after this process and `name`, with a quota of `cores`.
    pub(super) fn create(cores: f64, name: &str) -> Result<CpuGroup, String> {
        if !(cores.is_finite() && cores >= 0.01) {
            return Err(format!(
                "--instance-cpu {cores}: a number of cores, at least 0.01"
            ));
        }
        let quota = (cores * PERIOD_US as f64).round() as u64;
        let leaf = format!("lifeboat-bench-{}-{name}", std::process::id());
        let v2 = Path::new("/sys/fs/cgroup");
        let v2_has_cpu = std::fs::read_to_string(v2.join("cgroup.controllers"))
            .map(|c| c.split_whitespace().any(|c| c == "cpu"))
            .unwrap_or(false);
        let (dir, files) = if v2_has_cpu {
            // The controller must be enabled for the root's children.
            let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+cpu");
            (
                v2.join(&leaf),
                vec![("cpu.max", format!("{quota} {PERIOD_US}"))],
            )
        } else {
            (
                Path::new("/sys/fs/cgroup/cpu").join(&leaf),
                vec![
                    ("cpu.cfs_period_us", PERIOD_US.to_string()),
                    ("cpu.cfs_quota_us", quota.to_string()),
                ],
            )
        };
        std::fs::create_dir(&dir).map_err(|e| {
            format!(
                "--instance-cpu needs a writable cgroup hierarchy (root): cannot create {}: {e}",
                dir.display()
            )
        })?;
        let group = CpuGroup { dir };
        for (file, value) in files {
            std::fs::write(group.dir.join(file), &value)
                .map_err(|e| format!("cannot set {file} of {}: {e}", group.dir.display()))?;
        }
        Ok(group)
    }

    /// The file a process writes its pid into to join the group.
    pub(super) fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        // The gateway is killed as its `Child` drops, an instant before or after this: the
        // group can go once it holds no process, so try for a second.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("bench: could not remove {}", self.dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_below_a_hundredth_of_a_core_or_not_a_number_is_refused() {
        for bad in [0.0, 0.001, -1.0, f64::NAN, f64::INFINITY] {
            let err = CpuGroup::create(bad, "t").err().expect("refused");
            assert!(err.contains("--instance-cpu"), "{err}");
        }
    }
}
