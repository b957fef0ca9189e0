//! A crash during recovery itself (issue 6). Open repairs things: it truncates a torn tail,
//! removes a segment whose creation was cut short, finishes a committed compaction, removes
//! temporary files, syncs the active segment and the directory. Each of those steps can be cut
//! by a power failure too, and the next open must still give the same state.
//!
//! Disk images that need such repairs are taken from crashes of the power-loss workload
//! (every crash point, a rotating choice of damages), keeping those whose open does more than
//! the two syncs of a clean open. For each, the clean recovery (real I/O) gives the reference
//! state; then for every I/O operation k of the open, the open is crashed at k and the result
//! is damaged in ten ways (plus a restart after kill -9 on the live directory), and each
//! image is recovered again with the real file system: it must open, show exactly the
//! reference state, pass `check`, keep no temporary file, and keep that state through a power
//! cut right after the open and a close and reopen.

#[path = "support/crash.rs"]
mod crash_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use crash_support::*;
use profiledb::Durability;
use profiledb::storage::io::FaultyIo;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for n in names(from) {
        if n == "LOCK" {
            continue;
        }
        std::fs::copy(from.join(&n), to.join(&n)).unwrap();
    }
}

/// What a clean open of `image` does: its I/O operations and what the recovery reported.
fn open_ops(image: &Path, scratch: &Path) -> (u64, profiledb::storage::RecoveryReport) {
    copy_dir(image, scratch);
    let io = FaultyIo::new();
    let db = open_faulty(scratch, &io).unwrap_or_else(|e| panic!("{}: {e}", image.display()));
    let ops = io.ops();
    let report = db.stats().storage.recovery;
    db.close().unwrap();
    (ops, report)
}

#[test]
fn a_crash_at_every_io_operation_of_recovery_recovers_the_same_state() {
    recovery_matrix(workload(), Durability::SyncEach.into(), true);
}

/// The same with images of the workload of large buffered bursts (torn tails of many frames
/// in large active segments).
#[test]
fn a_crash_at_every_io_operation_of_recovery_after_large_bursts_recovers_the_same_state() {
    let config = Config {
        durability: Durability::SyncEach,
        segment_size: BIG_SEGMENT_SIZE,
        preallocate: 0,
    };
    recovery_matrix(big_workload(), config, false);
}

/// `all_repairs`: the images must include every kind of repair.
fn recovery_matrix(steps: Vec<Step>, config: Config, all_repairs: bool) {
    let t0 = Instant::now();
    let tmp = scratch();
    let calls = calls(&steps);
    let states = model_states(&calls);
    let cap: usize = std::env::var("PROFILEDB_RECOVERY_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);

    // 1. Images that need repairs, from crashes of the workload.
    let io = FaultyIo::new();
    let n = run_workload(&tmp.path().join("count"), &io, &steps, None, config).ops;
    let mut images = Vec::new();
    let mut seen = BTreeSet::new();
    let (mut compactions, mut temps, mut truncations, mut removed_headers) = (0, 0, 0, 0);
    for k in 1..=n {
        let base = tmp.path().join(format!("w{k}"));
        let dir = base.join("db");
        let io = FaultyIo::new();
        io.crash_at(k);
        let run = run_workload(&dir, &io, &steps, None, config);
        let all = damages(k);
        for d in [k as usize % all.len(), (k as usize + 5) % all.len()] {
            let (name, cut) = &all[d];
            let image = base.join(format!("image{d}"));
            io.power_loss_with(&dir, &image, *cut).unwrap();
            let (ops, report) = open_ops(&image, &base.join(format!("probe{d}")));
            if ops <= 2 {
                continue;
            }
            let files = names(&image);
            let key = (
                ops,
                files.iter().any(|f| f == "COMPACT"),
                files.iter().filter(|f| f.ends_with(".tmp")).count(),
                report.truncated.is_some(),
            );
            if !seen.insert(key) && images.len() >= cap / 2 {
                continue;
            }
            compactions += files.iter().any(|f| f == "COMPACT") as usize;
            temps += files.iter().any(|f| f.ends_with(".tmp")) as usize;
            match &report.truncated {
                Some((_, len)) if *len <= 32 => removed_headers += 1,
                Some(_) => truncations += 1,
                None => {}
            }
            images.push((
                k,
                name.clone(),
                image,
                ops,
                run.acked,
                run.issued.min(calls.len()),
            ));
        }
        if images.len() >= cap {
            break;
        }
    }
    assert!(
        truncations > 0 && (!all_repairs || compactions > 0 && temps > 0 && removed_headers > 0),
        "images needing every kind of repair: {compactions} committed compactions, {temps} with \
         temp files, {truncations} torn tails, {removed_headers} cut segment creations"
    );

    // 2. Crash every I/O operation of their recovery.
    let mut failures = Failures::default();
    let (mut checked, mut points) = (0usize, 0usize);
    for (w, (k, damage, image, ops, acked, issued)) in images.iter().enumerate() {
        let what = format!("image {w} (workload crash at op {k}, damage {damage})");
        let reference_dir = tmp.path().join(format!("ref{w}"));
        copy_dir(image, &reference_dir);
        let db = open_real(&reference_dir).unwrap();
        let reference = db_state(&db).unwrap();
        db.close().unwrap();
        assert!(
            matching_prefix(&states, &reference, *acked, *issued).is_some(),
            "{what}: the clean recovery is no valid prefix"
        );
        // The reference is the only acceptable state now: "acked" = "issued" = its prefix.
        let p = matching_prefix(&states, &reference, *acked, *issued).unwrap();
        for j in 1..=*ops {
            points += 1;
            let base = tmp.path().join(format!("r{w}-{j}"));
            let dir = base.join("db");
            copy_dir(image, &dir);
            let io = FaultyIo::new();
            io.crash_at(j);
            if open_faulty(&dir, &io).is_ok() {
                failures.push(format!("{what}: the open survived a crash at its op {j}"));
                continue;
            }
            for (d, (name, cut)) in damages(j * 131 + w as u64).into_iter().enumerate() {
                let again = base.join(format!("image{d}"));
                io.power_loss_with(&dir, &again, cut).unwrap();
                checked += 1;
                if let Err(e) = check_image(&again, &states, &calls, p, p) {
                    failures.push(format!(
                        "{what}, open crashed at its op {j}/{ops}, damage {name}: {e}"
                    ));
                }
            }
            // The interrupted open restarted on the live directory (kill -9).
            io.revive();
            checked += 1;
            if let Err(e) = check_image(&dir, &states, &calls, p, p) {
                failures.push(format!(
                    "{what}, open crashed at its op {j}/{ops}, restart after kill -9: {e}"
                ));
            }
            let _ = std::fs::remove_dir_all(&base);
        }
    }
    eprintln!(
        "recovery_crash: {} images needing repair ({compactions} committed compactions, {temps} \
         with temp files, {truncations} torn tails, {removed_headers} cut segment creations), \
         {points} crash points in their recovery, {} damages + kill -9 each, {checked} images \
         checked, {:.1?}",
        images.len(),
        damages(1).len(),
        t0.elapsed()
    );
    failures.assert_none(checked);
}

/// `kill -9`, then the restarted process's open is cut by a power failure at each of its I/O
/// operations (its page cache holds in-doubt calls the open has not made durable yet), then
/// the machine restarts: the state must still be the model after some prefix of the calls
/// between the acknowledged and the issued ones, and everything `check_image` checks.
#[test]
fn a_power_cut_during_the_restart_after_kill_9_loses_nothing_acknowledged() {
    let t0 = Instant::now();
    let tmp = scratch();
    let steps = workload();
    let calls = calls(&steps);
    let states = model_states(&calls);
    let io = FaultyIo::new();
    let n = run_workload(
        &tmp.path().join("count"),
        &io,
        &steps,
        None,
        Durability::SyncEach,
    )
    .ops;
    let stride: u64 = std::env::var("PROFILEDB_RECOVERY_STRIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut failures = Failures::default();
    let (mut checked, mut points, mut workload_points) = (0usize, 0usize, 0usize);
    let crashed_run = |base: &Path, k: u64| {
        let dir = base.join("db");
        let io = FaultyIo::new();
        io.crash_at(k);
        let run = run_workload(&dir, &io, &steps, None, Durability::SyncEach);
        io.revive();
        (dir, io, run)
    };
    let mut k = 1;
    while k <= n {
        workload_points += 1;
        // The restart's operations, counted once.
        let base = tmp.path().join(format!("k{k}"));
        let (dir, io, _) = crashed_run(&base.join("probe"), k);
        let before = io.ops();
        let m = match open_faulty(&dir, &io) {
            Ok(db) => {
                let m = io.ops() - before;
                drop(db);
                m
            }
            Err(e) => {
                failures.push(format!("workload crash at op {k}: restart failed: {e}"));
                0
            }
        };
        for j in 1..=m {
            points += 1;
            let (dir, io, run) = crashed_run(&base.join(format!("j{j}")), k);
            io.crash_at(io.ops() + j);
            if open_faulty(&dir, &io).is_ok() {
                failures.push(format!("workload crash at op {k}: restart survived op {j}"));
                continue;
            }
            let issued = run.issued.min(calls.len());
            for (d, (name, cut)) in damages(k * 31 + j).into_iter().enumerate() {
                let image = base.join(format!("j{j}-image{d}"));
                io.power_loss_with(&dir, &image, cut).unwrap();
                checked += 1;
                if let Err(e) = check_image(&image, &states, &calls, run.acked, issued) {
                    failures.push(format!(
                        "workload crash at op {k} (acked {}, issued {issued}), restart cut at \
                         its op {j}/{m}, damage {name}: {e}",
                        run.acked
                    ));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&base);
        k += stride;
    }
    eprintln!(
        "recovery_crash (kill -9 restarts): {workload_points} workload crash points, {points} \
         crash points in their restarts, {} damages each, {checked} images checked, {:.1?}",
        damages(1).len(),
        t0.elapsed()
    );
    failures.assert_none(checked);
}
