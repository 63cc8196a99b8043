//! Keeping data safe: `get_backup` under writes, `skerry restore` into a new node that then
//! joins the cluster from its cursors, damaged backups refused, `skerry check` finding a
//! broken index, and the store format (an older store opens, a newer one is refused).
//! Issue 11.

mod common;

use common::cluster::*;
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SUITE: u8 = 29;

fn skerry(args: &[&str], root: &Path) -> (i32, String) {
    let dir = root.parent().unwrap();
    let cfg = dir.join(format!(
        "{}.yaml",
        root.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&cfg, format!("rootPath: {}\n", root.display())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skerry"))
        .args(args)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn download_backup(n: &TestNode, to: &Path) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-f",
            "-u",
            &format!("{USER}:{PASS}"),
            "-H",
            "Content-Type: application/json",
        ])
        .args(["-d", r#"{"operation":"get_backup","database":"dev"}"#, "-o"])
        .arg(to)
        .arg(format!("http://{}/", n.addr()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_backup_taken_under_writes_restores_into_a_node_that_catches_up_from_its_cursors() {
    let ip = ips(SUITE, 2);
    let a = TestNode::start(&ip[0], &repl_yaml(&ip[0]));
    create_table(&a, "dog");
    // Four clients write while the backup streams.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, written, addr) = (stop.clone(), written.clone(), a.addr());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let recs: Vec<_> = (0..50)
                        .map(|k| json!({"id": format!("w{w}-{i}-{k}"), "w": w}))
                        .collect();
                    let (s, b) = post_json(
                        &addr,
                        Some(&basic(USER, PASS)),
                        json!({"operation":"insert","database":"dev","table":"dog","records":recs}),
                    );
                    assert_eq!(s, 200, "{b}");
                    written.fetch_add(50, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(30), || written
        .load(Ordering::Relaxed)
        >= 2000));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a.skerrybak");
    download_backup(&a, &file);
    let at_backup_end = written.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(30), || written
        .load(Ordering::Relaxed)
        >= at_backup_end + 1000));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let total = written.load(Ordering::Relaxed) as u64;

    // Restore for a new node, check it offline, start it.
    let root = tmp.path().join("b-data");
    let (rc, out) = skerry(&["restore", file.to_str().unwrap()], &root);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = skerry(&["check"], &root);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("no problems found"), "{out}");
    let b = TestNode::start_with_env(
        &ip[1],
        &repl_yaml(&ip[1]),
        &[("ROOTPATH", root.to_str().unwrap())],
    );
    let restored = record_count(&b, "dog").unwrap();
    assert!(
        restored >= 2000 && restored < total,
        "restored {restored} of {total}"
    );
    // Join: B continues from its cursors, no full copy of anything.
    add_node(&a, &b.ip);
    assert!(
        wait_until(Duration::from_secs(60), || record_count(&b, "dog")
            == Some(total)),
        "B holds {:?} of {total}",
        record_count(&b, "dog")
    );
    assert_eq!(keys(&a, "dog"), keys(&b, "dog"));
    assert!(!b.log().contains("full copy of"), "{}", b.log());
}

#[test]
fn damaged_truncated_or_misplaced_restores_are_refused_and_leave_nothing() {
    let ip = ips(SUITE, 1);
    let a = TestNode::start(&ip[0], "");
    create_table(&a, "dog");
    insert(&a, "dog", json!([{"id":1},{"id":2}]));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a.skerrybak");
    download_backup(&a, &file);
    let good = std::fs::read(&file).unwrap();
    let empty_dir = |p: &PathBuf| std::fs::read_dir(p).map_or(true, |mut d| d.next().is_none());

    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("one flipped byte", flipped, "damaged"),
        ("truncated", good[..good.len() - 20].to_vec(), "ends early"),
        (
            "not a backup",
            b"hello, world, this is not it".to_vec(),
            "not a Skerry backup",
        ),
    ];
    for (i, (case, bytes, wanted)) in cases.into_iter().enumerate() {
        let f = tmp.path().join(format!("bad{i}"));
        std::fs::write(&f, bytes).unwrap();
        let root = tmp.path().join(format!("root{i}"));
        let (rc, out) = skerry(&["restore", f.to_str().unwrap()], &root);
        assert_ne!(rc, 0, "{case}: {out}");
        assert!(out.contains(wanted), "{case}: {out}");
        assert!(empty_dir(&root), "{case}: the failed restore left files");
    }
    // A rootPath that holds anything is never overwritten.
    let used = tmp.path().join("used");
    std::fs::create_dir_all(&used).unwrap();
    std::fs::write(used.join("keep.txt"), "mine").unwrap();
    let (rc, out) = skerry(&["restore", file.to_str().unwrap()], &used);
    assert_ne!(rc, 0);
    assert!(out.contains("is not empty"), "{out}");
    assert_eq!(
        std::fs::read_to_string(used.join("keep.txt")).unwrap(),
        "mine"
    );
}

/// Rewrites a backup without its first index entry of a `d`/`i` table keyspace, with a valid
/// checksum: the restored store then lacks that entry, which `skerry check` must find.
fn without_one_index_entry(backup: &[u8]) -> Vec<u8> {
    let mut out = backup[..20].to_vec();
    let mut p = 20;
    let mut count = 0u64;
    let mut dropped = false;
    loop {
        let tag = backup[p];
        if tag == 0 {
            break;
        }
        let n = backup[p + 1] as usize;
        let name = std::str::from_utf8(&backup[p + 2..p + 2 + n])
            .unwrap()
            .to_string();
        let mut q = p + 2 + n;
        let klen = u32::from_be_bytes(backup[q..q + 4].try_into().unwrap()) as usize;
        q += 4 + klen;
        let vlen = u32::from_be_bytes(backup[q..q + 4].try_into().unwrap()) as usize;
        q += 4 + vlen;
        if !dropped && name.starts_with('i') && name != "i0" {
            dropped = true;
        } else {
            out.extend_from_slice(&backup[p..q]);
            count += 1;
        }
        p = q;
    }
    assert!(dropped, "no index entry to drop");
    out.push(0);
    let digest = ring::digest::digest(&ring::digest::SHA256, &out);
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(digest.as_ref());
    out
}

#[test]
fn check_finds_a_record_whose_index_entry_is_missing() {
    let ip = ips(SUITE, 1);
    let a = TestNode::start(&ip[0], "");
    create_table(&a, "dog");
    insert(
        &a,
        "dog",
        json!([{"id":1,"name":"Penny"},{"id":2,"name":"Kato"}]),
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a.skerrybak");
    download_backup(&a, &file);
    let broken = tmp.path().join("broken.skerrybak");
    std::fs::write(
        &broken,
        without_one_index_entry(&std::fs::read(&file).unwrap()),
    )
    .unwrap();
    let root = tmp.path().join("r");
    let (rc, out) = skerry(&["restore", broken.to_str().unwrap()], &root);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = skerry(&["check"], &root);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("is missing its index entry"), "{out}");
    // The intact backup checks clean (so the problem above is the dropped entry).
    let root = tmp.path().join("ok");
    assert_eq!(skerry(&["restore", file.to_str().unwrap()], &root).0, 0);
    let (rc, out) = skerry(&["check"], &root);
    assert_eq!(rc, 0, "{out}");
}

#[test]
fn a_store_from_the_previous_release_opens_and_a_newer_format_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-format-0.tar.gz");
    let ok = Command::new("tar")
        .arg("xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let root = tmp.path().join("data");
    let ip = ips(SUITE, 1);
    let mut n = TestNode::start_with_env(&ip[0], "", &[("ROOTPATH", root.to_str().unwrap())]);
    // Written by the release before the store format existed (see tests/fixtures).
    assert_eq!(
        n.ok(json!({"operation":"search_by_id","database":"dev","table":"dog","ids":[1,2,3],"get_attributes":["id","name","age"]})),
        json!([{"id":1,"name":"Penny","age":7},{"id":2,"name":"Kato","age":4}])
    );
    n.ok(json!({"operation":"insert","database":"dev","table":"dog","records":[{"id":4}]}));
    n.stop();
    let (rc, out) = skerry(&["check"], &root);
    assert_eq!(rc, 0, "{out}");

    // A store a future version marked as format 99 is refused with a clear message.
    {
        let db = fjall::Database::builder(root.join("db")).open().unwrap();
        let meta = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        meta.insert("fmt", 99u32.to_be_bytes()).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let (rc, out) = skerry(&["check"], &root);
    assert_ne!(rc, 0);
    assert!(
        out.contains("written by a newer Skerry (store format 99)"),
        "{out}"
    );
}
