//! Snapshot files: each snapshot is a file of its own in the `snapshots` folder beside the sled
//! database, written and read a pair at a time, so no snapshot is ever whole in memory (nor in
//! sled's page cache, which would keep it resident).
//!
//! The folder holds `current`, the last snapshot built or installed, and while one is under way
//! `building` (a build) or `receiving.N` (chunks from the leader). Either becomes `current` by a
//! rename after an fsync, so `current` is always a whole snapshot; leftovers of a crash are
//! removed at open.
//!
//! Format (integers big-endian): the magic `rsnap\0\0\x01`; the snapshot's meta (log id,
//! membership, id) as a 4-byte length and its postcard encoding; then each pair of the state
//! tree as a 4-byte key length (never 0), the key, a 4-byte value length, the value; then a
//! 4-byte 0 and the 8-byte pair count. The meta travels inside the data, so a follower that
//! received the file holds the same self-describing snapshot the leader built.
//!
//! Openraft sends `current` in chunks (`snapshot_max_chunk_size`) and writes received chunks into
//! a `receiving.N` file ([`SnapshotFile`]) at their offsets.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use openraft::SnapshotMeta;

use crate::types::{Member, NodeId};

const MAGIC: &[u8; 8] = b"rsnap\0\0\x01";
const CURRENT: &str = "current";
const BUILDING: &str = "building";
const RECEIVING: &str = "receiving.";
/// The largest meta a header may declare: a membership of a few hundred members fits many times.
const MAX_META: u32 = 1 << 20;

pub(crate) type Meta = SnapshotMeta<NodeId, Member>;

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Makes a rename or a new file in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The snapshots folder of one node.
#[derive(Debug)]
pub(crate) struct Folder {
    dir: PathBuf,
    received: AtomicU64,
}

impl Folder {
    /// Opens (creates) the folder and removes what a crash left of builds and receptions.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == BUILDING || name.starts_with(RECEIVING) {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            received: AtomicU64::new(0),
        })
    }

    fn current(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    /// Whether a snapshot is stored.
    pub(crate) fn exists(&self) -> bool {
        self.current().is_file()
    }

    /// The stored snapshot's meta and a reader of its pairs, if one is stored.
    pub(crate) fn read(&self) -> io::Result<Option<(Meta, Reader)>> {
        match std::fs::File::open(self.current()) {
            Ok(file) => Reader::new(file).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The stored snapshot's meta and its file, to send, if one is stored.
    pub(crate) async fn open_current(&self) -> io::Result<Option<(Meta, SnapshotFile)>> {
        let Some((meta, _)) = self.read()? else {
            return Ok(None);
        };
        let file = tokio::fs::File::open(self.current()).await?;
        Ok(Some((
            meta,
            SnapshotFile {
                file,
                receiving: None,
            },
        )))
    }

    /// Starts a build: [`Writer::finish`] makes it `current`.
    pub(crate) fn build(&self, meta: &Meta) -> io::Result<Writer> {
        Writer::new(self.dir.join(BUILDING), self.current(), meta)
    }

    /// A new file for the chunks of a snapshot the leader sends; removed when dropped unless
    /// [`Folder::install`] made it `current`.
    pub(crate) async fn receive(&self) -> io::Result<SnapshotFile> {
        let n = self.received.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{RECEIVING}{n}"));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await?;
        Ok(SnapshotFile {
            file,
            receiving: Some(path),
        })
    }

    /// A reader of a received file, once every chunk is in; checks it is the snapshot `meta`
    /// announces (a reader's last item is an error if it is not whole).
    pub(crate) async fn received(
        &self,
        snapshot: &mut SnapshotFile,
        meta: &Meta,
    ) -> io::Result<Reader> {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        if snapshot.receiving.is_none() {
            // Not from `receive` (a snapshot handed over whole): a received copy of it.
            let mut copy = self.receive().await?;
            snapshot.file.seek(io::SeekFrom::Start(0)).await?;
            tokio::io::copy(&mut snapshot.file, &mut copy.file).await?;
            *snapshot = copy;
        }
        snapshot.file.flush().await?;
        snapshot.file.sync_all().await?;
        let path = snapshot
            .receiving
            .as_ref()
            .ok_or_else(|| invalid("the snapshot to install was not received".into()))?;
        let (inside, reader) = Reader::new(std::fs::File::open(path)?)?;
        if inside.snapshot_id != meta.snapshot_id || inside.last_log_id != meta.last_log_id {
            return Err(invalid(format!(
                "received snapshot {} (up to {:?}) where {} (up to {:?}) was announced",
                inside.snapshot_id, inside.last_log_id, meta.snapshot_id, meta.last_log_id
            )));
        }
        Ok(reader)
    }

    /// Makes a received file `current`, durably.
    pub(crate) fn install(&self, snapshot: &mut SnapshotFile) -> io::Result<()> {
        let path = snapshot
            .receiving
            .take()
            .ok_or_else(|| invalid("the snapshot to install was not received".into()))?;
        std::fs::rename(&path, self.current())?;
        sync_dir(&self.dir)
    }
}

/// Writes a snapshot pair by pair; [`Writer::finish`] makes it the stored one.
pub(crate) struct Writer {
    out: BufWriter<std::fs::File>,
    path: PathBuf,
    current: PathBuf,
    count: u64,
    bytes: u64,
}

impl Writer {
    fn new(path: PathBuf, current: PathBuf, meta: &Meta) -> io::Result<Self> {
        let meta = postcard::to_allocvec(meta).map_err(|e| invalid(e.to_string()))?;
        let len = u32::try_from(meta.len())
            .ok()
            .filter(|l| *l <= MAX_META)
            .ok_or_else(|| invalid(format!("snapshot meta of {} bytes", meta.len())))?;
        let mut out = BufWriter::with_capacity(1 << 16, std::fs::File::create(&path)?);
        out.write_all(MAGIC)?;
        out.write_all(&len.to_be_bytes())?;
        out.write_all(&meta)?;
        Ok(Self {
            out,
            path,
            current,
            count: 0,
            bytes: (MAGIC.len() + 4 + meta.len()) as u64,
        })
    }

    fn len_of(bytes: &[u8]) -> io::Result<[u8; 4]> {
        u32::try_from(bytes.len())
            .map(u32::to_be_bytes)
            .map_err(|_| invalid(format!("a snapshot entry of {} bytes", bytes.len())))
    }

    pub(crate) fn push(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        if key.is_empty() {
            return Err(invalid("an empty key in a snapshot".into()));
        }
        self.out.write_all(&Self::len_of(key)?)?;
        self.out.write_all(key)?;
        self.out.write_all(&Self::len_of(value)?)?;
        self.out.write_all(value)?;
        self.count += 1;
        self.bytes += 8 + (key.len() + value.len()) as u64;
        Ok(())
    }

    /// Ends the file, makes it durable and `current`; answers its pair count and size.
    pub(crate) fn finish(mut self) -> io::Result<(u64, u64)> {
        self.out.write_all(&0u32.to_be_bytes())?;
        self.out.write_all(&self.count.to_be_bytes())?;
        let file = self
            .out
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.path, &self.current)?;
        if let Some(dir) = self.current.parent() {
            sync_dir(dir)?;
        }
        Ok((self.count, self.bytes + 12))
    }
}

/// Reads a snapshot's pairs in order; the last item is an error if the file was cut short or
/// its count does not match.
pub(crate) struct Reader {
    input: BufReader<std::fs::File>,
    count: u64,
    done: bool,
}

impl Reader {
    fn new(file: std::fs::File) -> io::Result<(Meta, Self)> {
        let mut input = BufReader::with_capacity(1 << 16, file);
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(invalid("not a snapshot file (bad magic)".into()));
        }
        let len = Self::read_u32(&mut input)?;
        if len > MAX_META {
            return Err(invalid(format!("snapshot meta of {len} bytes")));
        }
        let meta = Self::read_exact(&mut input, len)?;
        let meta = postcard::from_bytes(&meta).map_err(|e| invalid(e.to_string()))?;
        Ok((
            meta,
            Self {
                input,
                count: 0,
                done: false,
            },
        ))
    }

    fn read_u32(input: &mut impl Read) -> io::Result<u32> {
        let mut b = [0u8; 4];
        input.read_exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    /// `len` bytes, allocated as they arrive (a corrupt length ends at the end of the file).
    fn read_exact(input: &mut impl Read, len: u32) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        input.take(u64::from(len)).read_to_end(&mut out)?;
        if out.len() != len as usize {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(out)
    }

    fn next_pair(&mut self) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let klen = Self::read_u32(&mut self.input)?;
        if klen == 0 {
            let mut count = [0u8; 8];
            self.input.read_exact(&mut count)?;
            let count = u64::from_be_bytes(count);
            if count != self.count {
                return Err(invalid(format!(
                    "snapshot holds {} pairs, its trailer says {count}",
                    self.count
                )));
            }
            return Ok(None);
        }
        let key = Self::read_exact(&mut self.input, klen)?;
        let vlen = Self::read_u32(&mut self.input)?;
        let value = Self::read_exact(&mut self.input, vlen)?;
        self.count += 1;
        Ok(Some((key, value)))
    }
}

impl Iterator for Reader {
    type Item = io::Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_pair() {
            Ok(Some(pair)) => Some(Ok(pair)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Openraft's handle on a snapshot's bytes: the stored file being sent, or a file being
/// received (removed when dropped before it was installed, e.g. when the leader gave up).
#[derive(Debug)]
pub(crate) struct SnapshotFile {
    file: tokio::fs::File,
    receiving: Option<PathBuf>,
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if let Some(path) = self.receiving.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl tokio::io::AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl tokio::io::AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use openraft::StoredMembership;
    use store_testkit::TempDir;

    use super::*;

    fn meta(id: &str) -> Meta {
        SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: id.to_owned(),
        }
    }

    fn pairs() -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b"c".to_vec(), 7u64.to_be_bytes().to_vec()),
            (b"dapp:k".to_vec(), vec![1; 300]),
            (b"dapp:empty".to_vec(), Vec::new()),
        ]
    }

    fn written(folder: &Folder, id: &str) -> u64 {
        let mut w = folder.build(&meta(id)).unwrap();
        for (k, v) in pairs() {
            w.push(&k, &v).unwrap();
        }
        w.finish().unwrap().1
    }

    #[test]
    fn a_written_snapshot_reads_back_pair_by_pair_and_replaces_the_last() {
        let dir = TempDir::new("raft-snap");
        let folder = Folder::open(dir.path()).unwrap();
        assert!(folder.read().unwrap().is_none());
        written(&folder, "one");
        let size = written(&folder, "two");
        assert_eq!(
            std::fs::metadata(dir.path().join(CURRENT)).unwrap().len(),
            size
        );
        let (m, reader) = folder.read().unwrap().unwrap();
        assert_eq!(m.snapshot_id, "two");
        let read: Vec<_> = reader.map(Result::unwrap).collect();
        assert_eq!(read, pairs());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only `current`"
        );
    }

    /// A file cut anywhere after its header is refused (never taken for a smaller state).
    #[test]
    fn a_snapshot_cut_short_is_an_error_wherever_it_is_cut() {
        let dir = TempDir::new("raft-snap-cut");
        let folder = Folder::open(dir.path()).unwrap();
        let size = written(&folder, "whole");
        let bytes = std::fs::read(dir.path().join(CURRENT)).unwrap();
        let header = MAGIC.len() + 4 + postcard::to_allocvec(&meta("whole")).unwrap().len();
        for cut in header..size as usize {
            std::fs::write(dir.path().join(CURRENT), &bytes[..cut]).unwrap();
            let (_, reader) = folder.read().unwrap().unwrap();
            let last = reader.last().unwrap();
            assert!(last.is_err(), "cut at {cut} of {size} read whole");
        }
    }

    #[tokio::test]
    async fn a_received_file_installs_only_as_the_snapshot_announced_and_is_removed_if_dropped() {
        use tokio::io::AsyncWriteExt;
        let dir = TempDir::new("raft-snap-recv");
        let source = TempDir::new("raft-snap-src");
        let from = Folder::open(source.path()).unwrap();
        written(&from, "sent");
        let bytes = std::fs::read(source.path().join(CURRENT)).unwrap();

        let folder = Folder::open(dir.path()).unwrap();
        let mut wrong = folder.receive().await.unwrap();
        wrong.write_all(&bytes).await.unwrap();
        let err = folder
            .received(&mut wrong, &meta("other"))
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("announced"), "{err}");
        drop(wrong);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let mut file = folder.receive().await.unwrap();
        file.write_all(&bytes).await.unwrap();
        let reader = folder.received(&mut file, &meta("sent")).await.unwrap();
        assert_eq!(reader.map(Result::unwrap).collect::<Vec<_>>(), pairs());
        folder.install(&mut file).unwrap();
        drop(file);
        assert_eq!(folder.read().unwrap().unwrap().0.snapshot_id, "sent");
    }

    #[test]
    fn leftovers_of_a_crash_are_removed_at_open() {
        let dir = TempDir::new("raft-snap-left");
        std::fs::write(dir.path().join(BUILDING), b"half").unwrap();
        std::fs::write(dir.path().join("receiving.3"), b"half").unwrap();
        let folder = Folder::open(dir.path()).unwrap();
        assert!(!folder.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
