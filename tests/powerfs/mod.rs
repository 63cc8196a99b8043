//! PowerFs: a test-only FUSE filesystem that forgets everything not yet fsynced when the
//! "power" is cut (the LazyFS approach), so a test can prove that acknowledged writes were
//! really made durable and not merely handed to the OS page cache, which survives `kill -9`.
//!
//! It owns a whole in-memory filesystem with two images of each inode: the current one (what
//! processes see) and the durable one (what a disk would hold after a power loss):
//! - a regular file's data and size become durable on `fsync`/`fdatasync` of that file;
//! - a directory's entries (create, mkdir, unlink, rmdir, rename in or out of it) become durable
//!   on `fsync` of that directory; a new file whose directory was never synced is gone after a
//!   cut, a renamed file is back under its old name, an unlinked one is back.
//!
//! This is the strict POSIX model (stricter than ext4's ordered mode, which also happens to keep
//! some unsynced data, and what btrfs or a disk cache may not): what a program may rely on after
//! a crash is exactly what it synced. Metadata other than size (mode, times) is kept as is.
//!
//! A cut is instantaneous and happens while the programs still run ([`PowerFs::cut_power`]):
//! each inode goes back to its durable image at that instant, a sync still in progress never
//! completes, and every later request fails with EIO (the machine is dead) until the programs
//! are killed and [`PowerFs::restore`] remounts, which also drops every kernel cache of the
//! mount. A sync takes a configurable time ([`PowerFs::set_sync_delay`]) like a disk's flush, so
//! a program that answers before its sync completes is caught by a cut right after the answer.
//!
//! It must never be used outside tests: it holds everything in memory. Not modelled: hard and
//! symbolic links, special files, extended attributes, torn writes within a sync.

use fuser::{
    AccessFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    SessionACL, TimeOrNow, WriteFlags,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

const PAGE: u64 = 4096;
/// Kernel caches of entries and attributes: every change goes through this one kernel, so
/// they stay coherent within a mount; a cut remounts, which drops them.
const TTL: Duration = Duration::from_secs(1);

/// File contents as sparse pages shared copy-on-write between the current and durable images
/// (fjall preallocates 64 MiB journals with `set_len`; holes cost nothing).
#[derive(Clone, Default)]
struct Data {
    pages: BTreeMap<u64, Arc<[u8; PAGE as usize]>>,
    size: u64,
}

impl Data {
    fn read(&self, offset: u64, len: u32) -> Vec<u8> {
        let end = self.size.min(offset.saturating_add(u64::from(len)));
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; (end - offset) as usize];
        let mut pos = offset;
        while pos < end {
            let (idx, within) = (pos / PAGE, pos % PAGE);
            let n = (PAGE - within).min(end - pos);
            if let Some(p) = self.pages.get(&idx) {
                let at = (pos - offset) as usize;
                out[at..at + n as usize]
                    .copy_from_slice(&p[within as usize..(within + n) as usize]);
            }
            pos += n;
        }
        out
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let (idx, within) = (pos / PAGE, pos % PAGE);
            let n = ((PAGE - within) as usize).min(rest.len());
            let page = self
                .pages
                .entry(idx)
                .or_insert_with(|| Arc::new([0u8; PAGE as usize]));
            Arc::make_mut(page)[within as usize..within as usize + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            pos += n as u64;
        }
        self.size = self.size.max(offset + data.len() as u64);
    }

    fn truncate(&mut self, size: u64) {
        if size < self.size {
            let first_gone = size.div_ceil(PAGE);
            self.pages.retain(|idx, _| *idx < first_gone);
            // The tail of a kept partial page must read as zeros if the file grows again.
            if !size.is_multiple_of(PAGE) {
                if let Some(p) = self.pages.get_mut(&(size / PAGE)) {
                    Arc::make_mut(p)[(size % PAGE) as usize..].fill(0);
                }
            }
        }
        self.size = size;
    }

    fn same_as(&self, other: &Data) -> bool {
        self.size == other.size
            && self.pages.len() == other.pages.len()
            && self
                .pages
                .iter()
                .zip(&other.pages)
                .all(|((a, pa), (b, pb))| a == b && (Arc::ptr_eq(pa, pb) || pa == pb))
    }
}

enum Body {
    File {
        now: Data,
        durable: Data,
    },
    Dir {
        now: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

struct Node {
    body: Body,
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
}

/// What a power cut threw away.
#[derive(Debug, Default, Clone)]
pub struct CutReport {
    /// Files whose content or size differed from what was last synced.
    pub files_reverted: usize,
    /// Directories whose entries differed from what was last synced.
    pub dirs_reverted: usize,
    /// Inodes no durable entry reached any more (created but never made durable, or unlinked).
    pub inodes_dropped: usize,
    /// The directory changes undone, as "+path" (an entry never made durable), "-path" (a
    /// removal never made durable) and "~path" (data or size never made durable): the first
    /// few, to show which sync a program forgot.
    pub undone: Vec<String>,
}

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// The power is off: every request fails with EIO until the next mount.
    off: bool,
    /// Power cuts so far: a sync that was still running at a cut never completes.
    cuts: u64,
    /// How long a sync takes, like a disk's flush: a program that answers before its sync
    /// completes is caught by a cut right after the answer.
    sync_delay: Duration,
}

impl State {
    fn new() -> State {
        let mut nodes = HashMap::new();
        nodes.insert(
            INodeNo::ROOT.0,
            Node {
                body: Body::Dir {
                    now: BTreeMap::new(),
                    durable: BTreeMap::new(),
                },
                perm: 0o755,
                uid: 0,
                gid: 0,
                mtime: SystemTime::now(),
            },
        );
        State {
            nodes,
            next_ino: INodeNo::ROOT.0 + 1,
            off: false,
            cuts: 0,
            sync_delay: Duration::ZERO,
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let n = self.nodes.get(&ino)?;
        let (kind, size, nlink) = match &n.body {
            Body::File { now, .. } => (FileType::RegularFile, now.size, 1),
            Body::Dir { .. } => (FileType::Directory, 0, 2),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind,
            perm: n.perm,
            nlink,
            uid: n.uid,
            gid: n.gid,
            rdev: 0,
            flags: 0,
            blksize: PAGE as u32,
        })
    }

    fn dir(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::Dir { now, .. }) => Ok(now),
            Some(Body::File { .. }) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file(&mut self, ino: u64) -> Result<&mut Data, Errno> {
        let n = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        n.mtime = SystemTime::now();
        match &mut n.body {
            Body::File { now, .. } => Ok(now),
            Body::Dir { .. } => Err(Errno::EISDIR),
        }
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(
            self.nodes.get(&ino).map(|n| &n.body),
            Some(Body::Dir { .. })
        )
    }

    /// A new inode linked (not durably) under `parent`.
    fn make(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        dir: bool,
        mode: u32,
    ) -> Result<u64, Errno> {
        if self.dir(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let body = if dir {
            Body::Dir {
                now: BTreeMap::new(),
                durable: BTreeMap::new(),
            }
        } else {
            Body::File {
                now: Data::default(),
                durable: Data::default(),
            }
        };
        self.nodes.insert(
            ino,
            Node {
                body,
                perm: (mode & 0o7777) as u16,
                uid: req.uid(),
                gid: req.gid(),
                mtime: SystemTime::now(),
            },
        );
        self.dir(parent)?.insert(name.to_os_string(), ino);
        Ok(ino)
    }

    fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        match &mut self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?.body {
            Body::File { now, durable } => *durable = now.clone(),
            Body::Dir { now, durable } => *durable = now.clone(),
        }
        Ok(())
    }

    /// Paths of the inodes reachable now, for the report.
    fn paths(&self) -> HashMap<u64, String> {
        let mut paths = HashMap::from([(INodeNo::ROOT.0, String::new())]);
        let mut todo = vec![INodeNo::ROOT.0];
        while let Some(ino) = todo.pop() {
            if let Some(Body::Dir { now, .. }) = self.nodes.get(&ino).map(|n| &n.body) {
                for (name, child) in now {
                    if !paths.contains_key(child) {
                        paths.insert(
                            *child,
                            format!("{}/{}", paths[&ino], name.to_string_lossy()),
                        );
                        todo.push(*child);
                    }
                }
            }
        }
        paths
    }

    fn cut(&mut self) -> CutReport {
        const SHOWN: usize = 40;
        let mut r = CutReport::default();
        let paths = self.paths();
        for (ino, n) in &self.nodes {
            let Some(path) = paths.get(ino) else { continue };
            match &n.body {
                Body::Dir { now, durable } => {
                    for (name, child) in now {
                        if durable.get(name) != Some(child) {
                            r.undone.push(format!("+{path}/{}", name.to_string_lossy()));
                        }
                    }
                    for (name, child) in durable {
                        if now.get(name) != Some(child) {
                            r.undone.push(format!("-{path}/{}", name.to_string_lossy()));
                        }
                    }
                }
                Body::File { now, durable } if !now.same_as(durable) => {
                    r.undone
                        .push(format!("~{path} ({} -> {} bytes)", now.size, durable.size));
                }
                Body::File { .. } => {}
            }
        }
        r.undone.sort();
        r.undone.truncate(SHOWN);
        for n in self.nodes.values_mut() {
            match &mut n.body {
                Body::File { now, durable } => {
                    if !now.same_as(durable) {
                        r.files_reverted += 1;
                        *now = durable.clone();
                    }
                }
                Body::Dir { now, durable } => {
                    if now != durable {
                        r.dirs_reverted += 1;
                        *now = durable.clone();
                    }
                }
            }
        }
        let mut reached = BTreeSet::from([INodeNo::ROOT.0]);
        let mut todo = vec![INodeNo::ROOT.0];
        while let Some(ino) = todo.pop() {
            if let Some(Body::Dir { now, .. }) = self.nodes.get(&ino).map(|n| &n.body) {
                for child in now.values() {
                    if reached.insert(*child) {
                        todo.push(*child);
                    }
                }
            }
        }
        let before = self.nodes.len();
        self.nodes.retain(|ino, _| reached.contains(ino));
        r.inodes_dropped = before - self.nodes.len();
        r
    }
}

/// The FUSE face of one mount; every mount of a [`PowerFs`] shares its [`State`].
struct Mounted(Arc<Mutex<State>>);

impl Mounted {
    /// The state, or EIO while the power is off (the machine is dead; its processes are
    /// being killed).
    fn state(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if s.off {
            return Err(Errno::EIO);
        }
        Ok(s)
    }

    /// fsync and fdatasync of a file, fsync of a directory: durable only once the delay has
    /// passed with the power still on.
    fn sync(&self, ino: INodeNo) -> Result<(), Errno> {
        let (delay, cuts) = {
            let s = self.state()?;
            (s.sync_delay, s.cuts)
        };
        std::thread::sleep(delay);
        let mut s = self.state()?;
        if s.cuts != cuts {
            return Err(Errno::EIO);
        }
        s.sync(ino.0)
    }
}

/// `let mut s = live!(self, reply);`: the state, or the request fails with EIO (power off).
macro_rules! live {
    ($fs:expr, $reply:expr) => {
        match $fs.state() {
            Ok(s) => s,
            Err(e) => return $reply.error(e),
        }
    };
}

fn entry_reply(s: &State, ino: u64, reply: ReplyEntry) {
    match s.attr(ino) {
        Some(a) => reply.entry(&TTL, &a, Generation(0)),
        None => reply.error(Errno::ENOENT),
    }
}

impl Filesystem for Mounted {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = live!(self, reply);
        match s.dir(parent.0).map(|d| d.get(name).copied()) {
            Ok(Some(ino)) => entry_reply(&s, ino, reply),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match live!(self, reply).attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = live!(self, reply);
        if let Some(size) = size {
            match s.file(ino.0) {
                Ok(d) => d.truncate(size),
                Err(e) => return reply.error(e),
            }
        }
        let Some(n) = s.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(m) = mode {
            n.perm = (m & 0o7777) as u16;
        }
        n.uid = uid.unwrap_or(n.uid);
        n.gid = gid.unwrap_or(n.gid);
        match mtime {
            Some(TimeOrNow::SpecificTime(t)) => n.mtime = t,
            Some(TimeOrNow::Now) => n.mtime = SystemTime::now(),
            None => {}
        }
        match s.attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let mut s = live!(self, reply);
        match s.make(req, parent.0, name, false, mode & !umask) {
            Ok(ino) => entry_reply(&s, ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = live!(self, reply);
        match s.make(req, parent.0, name, true, mode & !umask) {
            Ok(ino) => entry_reply(&s, ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = live!(self, reply);
        let ino = match s.dir(parent.0).map(|d| d.get(name).copied()) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        if s.is_dir(ino) {
            return reply.error(Errno::EISDIR);
        }
        // The inode itself stays until the next cut: open handles still use it, and an unsynced
        // unlink brings it back.
        if let Ok(d) = s.dir(parent.0) {
            d.remove(name);
        }
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = live!(self, reply);
        let ino = match s.dir(parent.0).map(|d| d.get(name).copied()) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        match s.dir(ino) {
            Ok(d) if !d.is_empty() => return reply.error(Errno::ENOTEMPTY),
            Ok(_) => {}
            Err(e) => return reply.error(e),
        }
        if let Ok(d) = s.dir(parent.0) {
            d.remove(name);
        }
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let mut s = live!(self, reply);
        let ino = match s.dir(parent.0).map(|d| d.get(name).copied()) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(e) => return reply.error(e),
        };
        let target = match s.dir(newparent.0) {
            Ok(d) => d.get(newname).copied(),
            Err(e) => return reply.error(e),
        };
        if let Some(t) = target {
            if t == ino {
                return reply.ok();
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return reply.error(Errno::EEXIST);
            }
            match (s.is_dir(ino), s.is_dir(t)) {
                (false, true) => return reply.error(Errno::EISDIR),
                (true, false) => return reply.error(Errno::ENOTDIR),
                (true, true) if s.dir(t).is_ok_and(|d| !d.is_empty()) => {
                    return reply.error(Errno::ENOTEMPTY)
                }
                _ => {}
            }
        }
        if let Ok(d) = s.dir(parent.0) {
            d.remove(name);
        }
        if let Ok(d) = s.dir(newparent.0) {
            d.insert(newname.to_os_string(), ino);
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = live!(self, reply);
        if !s.nodes.contains_key(&ino.0) {
            return reply.error(Errno::ENOENT);
        }
        if flags.0 & libc::O_TRUNC != 0 && flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            if let Ok(d) = s.file(ino.0) {
                d.truncate(0);
            }
        }
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match live!(self, reply).nodes.get(&ino.0).map(|n| &n.body) {
            Some(Body::File { now, .. }) => reply.data(&now.read(offset, size)),
            Some(Body::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match live!(self, reply).file(ino.0) {
            Ok(d) => {
                d.write(offset, data);
                reply.written(data.len() as u32);
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // fdatasync keeps the size too (it must, to find the data again), so both are one.
        match self.sync(ino) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = live!(self, reply);
        let entries: Vec<(u64, OsString)> = match s.dir(ino.0) {
            Ok(d) => d.iter().map(|(n, i)| (*i, n.clone())).collect(),
            Err(e) => return reply.error(e),
        };
        let all = [(ino.0, OsString::from(".")), (ino.0, OsString::from(".."))]
            .into_iter()
            .chain(entries);
        for (i, (child, name)) in all.enumerate().skip(offset as usize) {
            let kind = if s.is_dir(child) {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.sync(ino) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = live!(self, reply);
        let existing = match s.dir(parent.0) {
            Ok(d) => d.get(name).copied(),
            Err(e) => return reply.error(e),
        };
        let ino = match existing {
            Some(_) if flags & libc::O_EXCL != 0 => return reply.error(Errno::EEXIST),
            Some(ino) => {
                if flags & libc::O_TRUNC != 0 {
                    match s.file(ino) {
                        Ok(d) => d.truncate(0),
                        Err(e) => return reply.error(e),
                    }
                }
                ino
            }
            None => match s.make(req, parent.0, name, false, mode & !umask) {
                Ok(ino) => ino,
                Err(e) => return reply.error(e),
            },
        };
        match s.attr(ino) {
            Some(a) => reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty()),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        match live!(self, reply).file(ino.0) {
            Ok(d) => {
                if offset + length > d.size {
                    d.size = offset + length;
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted PowerFs. Dropping it unmounts; a process still using the mount must be stopped
/// first (unmounting a busy mount fails).
pub struct PowerFs {
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

/// Why FUSE cannot be used here (no /dev/fuse, not permitted to mount): the caller skips.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl PowerFs {
    /// Mounts an empty PowerFs on `mountpoint` (an existing empty directory).
    pub fn mount(mountpoint: &Path) -> Result<PowerFs, Unavailable> {
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
        {
            return Err(Unavailable(format!("/dev/fuse is not usable: {e}")));
        }
        let mut fs = PowerFs {
            state: Arc::new(Mutex::new(State::new())),
            mountpoint: mountpoint.to_path_buf(),
            session: None,
        };
        fs.session = Some(fs.spawn().map_err(|e| {
            Unavailable(format!(
                "mounting a FUSE filesystem on {} failed: {e}",
                mountpoint.display()
            ))
        })?);
        Ok(fs)
    }

    fn spawn(&self) -> std::io::Result<fuser::BackgroundSession> {
        let mut cfg = Config::default();
        cfg.mount_options = vec![
            MountOption::FSName("skerry-powerfs".into()),
            MountOption::RW,
        ];
        // Only the mounting user (the test, and the node it starts): `allow_other` would need
        // user_allow_other in /etc/fuse.conf where a non-root user mounts through fusermount3.
        cfg.acl = SessionACL::Owner;
        // Several threads: a sync waiting out its delay must not stall other requests.
        cfg.n_threads = Some(4);
        fuser::spawn_mount(Mounted(self.state.clone()), &self.mountpoint, &cfg)
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// How long each sync takes from now on (0 at mount).
    pub fn set_sync_delay(&self, delay: Duration) {
        self.lock().sync_delay = delay;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The power goes off NOW, while the programs using the mount still run: everything not
    /// synced by this instant is forgotten, a sync still running never completes, and every
    /// request fails with EIO until [`PowerFs::restore`]. Kill the programs, then restore.
    pub fn cut_power(&mut self) -> CutReport {
        let mut s = self.lock();
        s.off = true;
        s.cuts += 1;
        s.cut()
    }

    /// Power back on: unmount (which drops every kernel cache of the mount) and mount the
    /// durable image. Nothing may use the mount any more (kill its programs first).
    pub fn restore(&mut self) {
        if let Some(s) = self.session.take() {
            s.umount_and_join()
                .expect("unmount PowerFs after the power cut");
        }
        self.lock().off = false;
        self.session = Some(
            self.spawn()
                .expect("mount PowerFs again after the power cut"),
        );
    }

    /// A cut while nothing uses the mount, and the power back on.
    pub fn power_cut(&mut self) -> CutReport {
        let r = self.cut_power();
        self.restore();
        r
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            if let Err(e) = s.umount_and_join() {
                eprintln!(
                    "PowerFs: unmounting {} failed: {e}",
                    self.mountpoint.display()
                );
            }
        }
    }
}
