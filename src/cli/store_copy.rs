//! `lifeboat store copy --from-config OLD.toml --to-config NEW.toml [--merge]`: copies every
//! record of one store into another (embedded to PostgreSQL or back, or between two data
//! folders), kind by kind, a page at a time, with the gateway stopped.
//!
//! Each page is taken in by the target only where it holds nothing under the same id
//! ([`Portable::import`]), so a copy run again writes nothing. A target that holds records
//! already is refused unless `--merge` says to copy into it anyway (what it holds is kept).
//! Progress is one line rewritten in place on a terminal, a line per kind otherwise; the
//! summary says per kind how many records were written and how many were already there.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::fail;
use crate::config::{Config, StoreConfig};
use crate::store::portable::{Imported, Portable, RecordKind};
use crate::store::{error_chain, OpenedStore, StoreError};

/// Records moved per page.
const PAGE: usize = 500;

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Copy every record of the store one config names into the store another names
    /// (stop the gateway first).
    ///
    /// Contacts with their consent history, erased contacts' tombstones, notifications with
    /// their attempts (queued ones stay queued), idempotency keys, channel states and the
    /// small records of other modules (opt-in tokens, bot offsets, guardrail counters). Safe
    /// to run again: what the target holds is skipped. Exit 0 when copied, 1 when a store
    /// cannot be opened or fails, 2 when a config is invalid, both name the same store, or
    /// the target holds records and --merge is not given.
    Copy {
        /// The config of the store to copy from (its `[store]` section is used; environment
        /// overrides such as LIFEBOAT_STORE_PATH are not applied to either config).
        #[arg(long, value_name = "OLD.toml")]
        from_config: PathBuf,
        /// The config of the store to copy into.
        #[arg(long, value_name = "NEW.toml")]
        to_config: PathBuf,
        /// Copy into a target that already holds records (records it holds under the same
        /// id are kept as they are).
        #[arg(long)]
        merge: bool,
    },
}

pub async fn run(action: Action) -> ExitCode {
    match action {
        Action::Copy {
            from_config,
            to_config,
            merge,
        } => copy(&from_config, &to_config, merge).await,
    }
}

/// What the summary calls each kind of record.
fn label(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Contacts => "contacts",
        RecordKind::Tombstones => "erased contacts",
        RecordKind::Notifications => "notifications",
        RecordKind::IdempotencyKeys => "idempotency keys",
        RecordKind::ChannelStates => "channel states",
        RecordKind::Kv => "other records",
    }
}

/// The `[store]` section of the config at `path` (the config must be valid as a whole: it is
/// the config the gateway will run with).
fn store_config(path: &Path) -> Result<StoreConfig, String> {
    Config::load(path)
        .map(|c| c.store)
        .map_err(|e| e.to_string())
}

/// Whether two configs name the same embedded store (the same data folder). Two databases
/// are compared once open, by where they are.
fn same_folder(a: &StoreConfig, b: &StoreConfig) -> bool {
    let folder = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    a.url.is_none() && b.url.is_none() && folder(&a.path) == folder(&b.path)
}

/// Opens the store `config` names, saying which one (`source` or `target`) failed and, for a
/// data folder another process holds, that the gateway must be stopped.
async fn open(config: &StoreConfig, role: &str) -> Result<OpenedStore, ExitCode> {
    crate::store::open_idle(config).await.map_err(|e| match &e {
        StoreError::Locked { .. } => fail(
            1,
            format!("{role}: {e}: stop the gateway using it before copying its store"),
        ),
        _ => fail(1, format!("{role}: {}", error_chain(&e))),
    })
}

async fn copy(from: &Path, to: &Path, merge: bool) -> ExitCode {
    let (source_cfg, target_cfg) = match (store_config(from), store_config(to)) {
        (Ok(s), Ok(t)) => (s, t),
        (Err(e), _) | (_, Err(e)) => return fail(2, e),
    };
    let same = || {
        fail(
            2,
            format!(
                "{} and {} name the same store: nothing to copy",
                from.display(),
                to.display()
            ),
        )
    };
    if same_folder(&source_cfg, &target_cfg) {
        return same();
    }
    // Opening a data folder creates it: a mistyped source path would copy nothing, quietly.
    if source_cfg.url.is_none() && !source_cfg.path.exists() {
        return fail(
            2,
            format!(
                "{}: the source store {} does not exist (store.path)",
                from.display(),
                source_cfg.path.display()
            ),
        );
    }
    let source = match open(&source_cfg, "source").await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let target = match open(&target_cfg, "target").await {
        Ok(t) => t,
        Err(code) => return code,
    };
    if source.location == target.location {
        return same();
    }
    let (from_store, to_store) = (&source.portable, &target.portable);
    let outcome = copy_between(
        (&**from_store, &source.location),
        (&**to_store, &target.location),
        merge,
    )
    .await;
    // Whatever happened, what the target took in is made durable before it closes. The
    // source is flushed as a stopping gateway flushes it (the embedded store keeps its queue's
    // size for the next start); nothing of it was changed.
    let flushed = target.store.flush().await;
    if let Err(e) = source.store.flush().await {
        tracing::warn!(error = %error_chain(&e), "could not flush the source store");
    }
    let code = match (outcome, flushed) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(code), _) => code,
        (Ok(()), Err(e)) => fail(1, format!("target: {}", error_chain(&e))),
    };
    drop((source, target));
    code
}

/// Copies everything from `source` into `target`, each given with where it is.
async fn copy_between(
    (source, source_at): (&dyn Portable, &str),
    (target, target_at): (&dyn Portable, &str),
    merge: bool,
) -> Result<(), ExitCode> {
    let store_err = |role: &str, e: StoreError| fail(1, format!("{role}: {}", error_chain(&e)));
    let mut held = 0;
    for kind in RecordKind::ALL {
        held += target
            .count(kind)
            .await
            .map_err(|e| store_err("target", e))?;
    }
    if held > 0 && !merge {
        return Err(fail(
            2,
            format!(
                "the target store ({}) already holds {held} records: pass --merge to copy into it anyway (records it holds under the same id are kept)",
                target_at
            ),
        ));
    }
    let mut totals = Vec::new();
    for kind in RecordKind::ALL {
        let total = source
            .count(kind)
            .await
            .map_err(|e| store_err("source", e))?;
        totals.push((kind, total));
    }
    println!(
        "copying {} records from {} to {}{}",
        totals.iter().map(|(_, n)| n).sum::<u64>(),
        source_at,
        target_at,
        if held > 0 { " (merging)" } else { "" }
    );
    let progress = Progress::new();
    let mut summary = Vec::new();
    for (kind, total) in totals {
        let done = copy_kind(source, target, kind, total, &progress)
            .await
            .map_err(|(role, e)| {
                progress.interrupt();
                store_err(role, e)
            })?;
        progress.finish(kind, done, total);
        summary.push((kind, done));
    }
    let written: u64 = summary.iter().map(|(_, d)| d.written).sum();
    let skipped: u64 = summary.iter().map(|(_, d)| d.skipped).sum();
    println!("copied: {written} records written, {skipped} already in the target");
    Ok(())
}

/// Copies every record of `kind`, a page at a time. On failure, which store failed.
async fn copy_kind(
    source: &dyn Portable,
    target: &dyn Portable,
    kind: RecordKind,
    total: u64,
    progress: &Progress,
) -> Result<Imported, (&'static str, StoreError)> {
    let mut done = Imported::default();
    let mut after = None;
    loop {
        let page = source
            .export(kind, after, PAGE)
            .await
            .map_err(|e| ("source", e))?;
        if !page.records.is_empty() {
            let imported = target
                .import(page.records)
                .await
                .map_err(|e| ("target", e))?;
            done.written += imported.written;
            done.skipped += imported.skipped;
            progress.update(kind, done, total);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(done),
        }
    }
}

/// Progress on stdout: one line rewritten in place on a terminal; elsewhere (a file, a pipe,
/// a test) only the line per kind when it is done.
struct Progress {
    terminal: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            terminal: std::io::stdout().is_terminal(),
        }
    }

    fn line(kind: RecordKind, done: Imported, total: u64) -> String {
        format!(
            "{}: {} of {total} ({} written, {} already there)",
            label(kind),
            done.written + done.skipped,
            done.written,
            done.skipped
        )
    }

    fn update(&self, kind: RecordKind, done: Imported, total: u64) {
        if self.terminal {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K{}", Self::line(kind, done, total));
            let _ = out.flush();
        }
    }

    fn finish(&self, kind: RecordKind, done: Imported, total: u64) {
        if self.terminal {
            print!("\r\x1b[2K");
        }
        println!("{}", Self::line(kind, done, total));
    }

    /// Ends the line being rewritten, so that the error starts on a line of its own.
    fn interrupt(&self) {
        if self.terminal {
            println!();
        }
    }
}
