//! sendfile(2) for `http.response.pathsend` on plain HTTP/1.1 connections, under hyper.
//!
//! hyper owns the connection and writes only the `Bytes` a body yields, with writev. To let
//! the kernel copy a file straight from the page cache into the socket, the body yields
//! *placeholders* instead of file bytes: `Bytes` that point into [`REGION`], a private static
//! range that nothing ever reads or writes, each registered here (file, offset, length) in a
//! small per-connection table. hyper queues them like any body chunk (its `Queue` write
//! strategy never copies a body buffer, see hyper's `proto/h1/io.rs`) and hands them back in
//! its `IoSlice`s when it flushes. The socket's writer ([`poll_write`], under `Checked`)
//! recognises them by address: what comes before the first placeholder goes out with writev
//! as usual, and a placeholder goes out with sendfile from its file, at the file offset of
//! the chunk plus how far hyper has advanced into it (the slice's start minus the chunk's).
//! The count returned is what the kernel sent, so hyper's own accounting of partial writes
//! stays right, and this side keeps no write position of its own.
//!
//! Each chunk gets its own slot of the region, so an address names exactly one chunk: one
//! that hyper dropped unwritten (a response cut at its Content-Length, a HEAD) can never be
//! taken for the next. A placeholder without its entry fails the write, which closes the
//! connection: never a wrong byte. Entries go when their chunk is written, when hyper flushes
//! with nothing left to write (anything left is a chunk it dropped), or with the connection;
//! their `Arc` holds the file open until then.
//!
//! Trade-offs: sendfile runs on the I/O thread, and waits for the disk when the file's pages
//! are not in the page cache. So each chunk is checked first (cachestat(2), one system call
//! that counts the range's cached pages): a chunk not wholly cached is read on the blocking
//! pool instead, as on the read path (`file.rs`), which also brings it into the cache. On
//! kernels before Linux 6.5, which lack cachestat, every chunk goes out with sendfile. The open
//! and fstat always go to the blocking pool. A file that shrinks while it is sent
//! makes sendfile return 0 early: the write fails and the connection closes (as on the read
//! path), so the response is always cut short; no mmap, so no SIGBUS. One difference with the
//! read path remains: the kernel queues references to the file's pages, not copies, so a
//! truncation inside a page still queued on the socket zeroes the rest of that page in flight
//! (and any change to the file changes what is still queued). Those bytes lie past the file's
//! new end, in a response the client sees cut. TLS and HTTP/2 keep the read path: their bytes
//! must pass through user space to be encrypted or framed.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncWrite, Interest};

use crate::metrics::{self, Metrics};

/// The most bytes one placeholder stands for (the read path's chunk size too).
pub const FILE_CHUNK: usize = 256 * 1024;

/// Placeholder slots: more than hyper ever holds unwritten (it queues at most 16 buffers, and
/// buffers no more body once it holds `max_buf_size` bytes, less than one whole chunk).
const SLOTS: usize = 16;

/// The address space placeholders point into. Never read or written: it only gives each
/// placeholder a distinct address. Zero-initialised and not constant (the `UnsafeCell`), so
/// it lives in .bss: no bytes in the library, and no memory unless touched.
struct Region(UnsafeCell<[u8; SLOTS * FILE_CHUNK]>);

// SAFETY: nothing ever writes the region (no `&mut` to it is made, and its pointer only
// reaches shared slices), so sharing it between threads cannot race.
unsafe impl Sync for Region {}

static REGION: Region = Region(UnsafeCell::new([0; SLOTS * FILE_CHUNK]));

fn region() -> &'static [u8] {
    // SAFETY: see `Region`: the bytes are never written, so a shared 'static slice of them is
    // valid for the life of the program.
    unsafe { &*REGION.0.get() }
}

/// Where `slice` lies in the region, when it is (part of) a placeholder.
fn region_offset(slice: &[u8]) -> Option<usize> {
    let base = region().as_ptr() as usize;
    let start = (slice.as_ptr() as usize).checked_sub(base)?;
    let end = start.checked_add(slice.len())?;
    (!slice.is_empty() && end <= SLOTS * FILE_CHUNK).then_some(start)
}

/// An open file being sent, and its path for the log.
pub struct OpenFile {
    pub file: File,
    pub path: PathBuf,
}

impl OpenFile {
    /// True when `len` bytes from `offset` are all in the page cache, so sendfile will not
    /// wait for the disk; also true where the kernel cannot tell (cachestat(2) is Linux 6.5+).
    pub fn cached(&self, offset: u64, len: usize) -> bool {
        cached_pages(self.file.as_fd(), offset, len as u64)
            .is_none_or(|(cached, pages)| cached >= pages)
    }
}

/// How many of the pages spanning `len` bytes from `offset` are in the page cache, and how
/// many pages that is; None where cachestat(2) is missing or fails.
#[cfg(target_os = "linux")]
fn cached_pages(file: BorrowedFd<'_>, offset: u64, len: u64) -> Option<(u64, u64)> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    /// cachestat's number on every architecture (new calls share one table since 5.1).
    const SYS_CACHESTAT: libc::c_long = 451;
    if len == 0 {
        return Some((0, 0));
    }
    let range = Range { off: offset, len };
    let mut stat = Stat::default();
    // SAFETY: the descriptor is open (borrowed), and both pointers are to live structs laid
    // out as the kernel's `cachestat_range` and `cachestat`; flags must be 0.
    let done = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0,
        )
    };
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if done != 0 || page <= 0 {
        return None;
    }
    let page = page as u64;
    let pages = (offset + len - 1) / page - offset / page + 1;
    Some((stat.nr_cache, pages))
}

#[cfg(not(target_os = "linux"))]
fn cached_pages(_: BorrowedFd<'_>, _: u64, _: u64) -> Option<(u64, u64)> {
    None
}

/// One placeholder chunk: which slot, and which bytes of which file it stands for.
struct Entry {
    slot: usize,
    file: Arc<OpenFile>,
    offset: u64,
    len: usize,
}

/// What a placeholder slice stands for: `len` bytes of `file` from `offset`.
struct Piece {
    file: Arc<OpenFile>,
    offset: u64,
    len: usize,
    /// Whether these bytes end the chunk.
    ends_chunk: bool,
}

/// A connection's placeholder chunks, shared by its response bodies and its socket writer
/// (both run in the connection's task: the lock is never contended).
#[derive(Default)]
pub struct Placeholders {
    table: parking_lot::Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// In the order they were handed out; at most [`SLOTS`].
    entries: VecDeque<Entry>,
    next_slot: usize,
}

impl Placeholders {
    /// A placeholder for `len` bytes of `file` from `offset` (at most [`FILE_CHUNK`]: the
    /// returned `Bytes` says how many it stands for).
    pub fn register(&self, file: &Arc<OpenFile>, offset: u64, len: usize) -> Bytes {
        let len = len.min(FILE_CHUNK);
        let mut table = self.table.lock();
        let slot = table.next_slot;
        table.next_slot = (slot + 1) % SLOTS;
        // A chunk still in this slot was dropped by hyper long ago (see `SLOTS`); should it
        // not have been, its write finds no entry and fails rather than send other bytes.
        table.entries.retain(|e| e.slot != slot);
        table.entries.push_back(Entry {
            slot,
            file: file.clone(),
            offset,
            len,
        });
        let start = slot * FILE_CHUNK;
        Bytes::from_static(&region()[start..start + len])
    }

    /// What the placeholder slice at `start` (its offset in the region) of `len` bytes
    /// stands for.
    fn piece(&self, start: usize, len: usize) -> io::Result<Piece> {
        let (slot, into) = (start / FILE_CHUNK, start % FILE_CHUNK);
        let table = self.table.lock();
        let entry = table.entries.iter().find(|e| e.slot == slot);
        match entry {
            Some(e) if into + len <= e.len => Ok(Piece {
                file: e.file.clone(),
                offset: e.offset + into as u64,
                len,
                ends_chunk: into + len == e.len,
            }),
            _ => Err(io::Error::other("a file placeholder without its file")),
        }
    }

    /// The chunk in `slot` is written: it goes, with any handed out before it (hyper writes
    /// in order, so those were dropped unwritten).
    fn written(&self, slot: usize) {
        let mut table = self.table.lock();
        if let Some(i) = table.entries.iter().position(|e| e.slot == slot) {
            table.entries.drain(..=i);
        }
    }

    /// hyper flushed with nothing left to write: any chunk still here was dropped, and its
    /// file can be closed.
    pub fn flushed(&self) {
        let mut table = self.table.lock();
        if !table.entries.is_empty() {
            table.entries.clear();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().entries.len()
    }
}

/// A socket that may send a file's bytes itself.
pub trait Sendfile {
    /// True for plain sockets; false where bytes must pass through user space (TLS).
    const PLAIN: bool;

    /// Sends up to `len` bytes of `file` from `offset`; Pending (and woken once writable)
    /// when the socket is full. Unsupported unless `PLAIN`.
    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        file: BorrowedFd<'_>,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let _ = (cx, file, offset, len);
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

/// sendfile on a tokio socket: the call runs inside `try_io`, so a full socket clears the
/// readiness tokio cached and the task is woken when it is writable again.
macro_rules! tokio_sendfile {
    ($socket:ty) => {
        impl Sendfile for $socket {
            const PLAIN: bool = cfg!(target_os = "linux");

            fn poll_sendfile(
                &self,
                cx: &mut Context<'_>,
                file: BorrowedFd<'_>,
                offset: u64,
                len: usize,
            ) -> Poll<io::Result<usize>> {
                loop {
                    ready!(self.poll_write_ready(cx))?;
                    let sent = self.try_io(Interest::WRITABLE, || {
                        sendfile(self.as_raw_fd(), file, offset, len)
                    });
                    match sent {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        other => return Poll::Ready(other),
                    }
                }
            }
        }
    };
}

tokio_sendfile!(tokio::net::TcpStream);
tokio_sendfile!(tokio::net::UnixStream);

impl<S> Sendfile for tokio_rustls::server::TlsStream<S> {
    const PLAIN: bool = false;
}

/// One sendfile(2) call.
#[cfg(target_os = "linux")]
fn sendfile(socket: RawFd, file: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<usize> {
    let mut offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    loop {
        // SAFETY: both descriptors are open for the call (the caller borrows the socket's
        // stream and the file), and `offset` is an off_t the call may update.
        let sent = unsafe { libc::sendfile(socket, file.as_raw_fd(), &mut offset, len) };
        if sent >= 0 {
            return Ok(sent as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Other systems' sendfile differs: their sockets are not `PLAIN`, so this is never called.
#[cfg(not(target_os = "linux"))]
fn sendfile(_: RawFd, _: BorrowedFd<'_>, _: u64, _: usize) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Writes `bufs` to `socket`, placeholders with sendfile: the bytes before the first
/// placeholder with writev, or else (at most) the placeholder. Returns the count written.
pub fn poll_write<S>(
    socket: &mut S,
    files: &Placeholders,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>>
where
    S: AsyncWrite + Sendfile + Unpin,
{
    let first = bufs.iter().position(|b| region_offset(b).is_some());
    match first {
        None => Pin::new(socket).poll_write_vectored(cx, bufs),
        Some(0) => send_placeholder(socket, files, cx, &bufs[0]),
        Some(i) => Pin::new(socket).poll_write_vectored(cx, &bufs[..i]),
    }
}

fn send_placeholder<S: Sendfile>(
    socket: &S,
    files: &Placeholders,
    cx: &mut Context<'_>,
    slice: &[u8],
) -> Poll<io::Result<usize>> {
    let Some(start) = region_offset(slice) else {
        return Poll::Ready(Err(io::Error::other("not a file placeholder")));
    };
    let piece = files.piece(start, slice.len())?;
    let fd = piece.file.file.as_fd();
    let sent = ready!(socket.poll_sendfile(cx, fd, piece.offset, piece.len))?;
    if sent == 0 {
        tracing::error!(
            "http.response.pathsend: cannot send {}: the file became shorter while it was sent; \
             closing the connection",
            piece.file.path.display()
        );
        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
    }
    Metrics::add(&metrics::current().sendfile_bytes, sent as u64);
    if piece.ends_chunk && sent == piece.len {
        files.written(start / FILE_CHUNK);
    }
    Poll::Ready(Ok(sent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use std::io::Write;

    /// A socket that takes at most `limit` bytes per write; its sendfile reads the file.
    struct Capped {
        out: std::cell::RefCell<Vec<u8>>,
        limit: usize,
        sendfiles: std::cell::Cell<usize>,
    }

    impl Capped {
        fn new(limit: usize) -> Self {
            Capped {
                out: Default::default(),
                limit,
                sendfiles: Default::default(),
            }
        }
    }

    impl AsyncWrite for Capped {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                assert!(region_offset(b).is_none(), "a placeholder reached writev");
                let take = b.len().min(self.limit - n);
                self.out.borrow_mut().extend_from_slice(&b[..take]);
                n += take;
            }
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl Sendfile for Capped {
        const PLAIN: bool = true;

        fn poll_sendfile(
            &self,
            _: &mut Context<'_>,
            file: BorrowedFd<'_>,
            offset: u64,
            len: usize,
        ) -> Poll<io::Result<usize>> {
            let mut buf = vec![0; len.min(self.limit)];
            let n = nix::sys::uio::pread(file, &mut buf, offset as i64)?;
            self.out.borrow_mut().extend_from_slice(&buf[..n]);
            self.sendfiles.set(self.sendfiles.get() + 1);
            Poll::Ready(Ok(n))
        }
    }

    fn temp_file(name: &str, data: &[u8]) -> Arc<OpenFile> {
        let path =
            std::env::temp_dir().join(format!("rsgi-sendfile-{}-{name}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .write_all(data)
            .unwrap();
        let file = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        Arc::new(OpenFile { file, path })
    }

    /// Writes `queue` as hyper does: up to 64 slices of what is left, then advances by the
    /// count written. Returns what the client would receive.
    fn drain(socket: &mut Capped, files: &Placeholders, mut queue: VecDeque<Bytes>) -> Vec<u8> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while !queue.is_empty() {
            let slices: Vec<IoSlice<'_>> = queue.iter().take(64).map(|b| IoSlice::new(b)).collect();
            let n = match poll_write(socket, files, &mut cx, &slices) {
                Poll::Ready(Ok(n)) => n,
                other => panic!("{other:?}"),
            };
            assert!(n > 0);
            drop(slices);
            let mut left = n;
            while left > 0 {
                let front = queue.front_mut().unwrap();
                let step = left.min(front.len());
                front.advance(step);
                left -= step;
                if front.is_empty() {
                    queue.pop_front();
                }
            }
        }
        socket.out.borrow().clone()
    }

    /// Chunks of a file, between a head and chunk-size lines, come out byte-exact whatever
    /// the size of each write, and every entry goes once written.
    #[test]
    fn placeholders_send_the_right_bytes_across_partial_writes() {
        let data: Vec<u8> = (0..3 * FILE_CHUNK + 11)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let file = temp_file("partial", &data);
        for limit in [1, 7, 4096, FILE_CHUNK - 1, FILE_CHUNK, 10 * FILE_CHUNK] {
            let files = Placeholders::default();
            let mut queue = VecDeque::from([Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n")]);
            let mut expected = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
            let mut offset = 0;
            while offset < data.len() {
                let chunk = files.register(&file, offset as u64, data.len() - offset);
                let line = format!("{:x}\r\n", chunk.len());
                queue.push_back(Bytes::from(line.clone()));
                queue.push_back(chunk.clone());
                queue.push_back(Bytes::from_static(b"\r\n"));
                expected.extend_from_slice(line.as_bytes());
                expected.extend_from_slice(&data[offset..offset + chunk.len()]);
                expected.extend_from_slice(b"\r\n");
                offset += chunk.len();
            }
            assert_eq!(files.len(), 4);
            let mut socket = Capped::new(limit);
            assert!(
                drain(&mut socket, &files, queue) == expected,
                "limit {limit}"
            );
            assert!(socket.sendfiles.get() >= 4);
            assert_eq!(files.len(), 0, "written chunks keep no file open");
        }
    }

    #[test]
    fn a_placeholder_never_stands_for_another_chunk() {
        let file = temp_file("stale", b"0123456789");
        let files = Placeholders::default();
        // hyper dropped this one unwritten (say a HEAD response's body).
        let dropped = files.register(&file, 0, 10);
        let start = region_offset(&dropped).unwrap();
        // Handing out every other slot reuses the dropped one's last.
        for _ in 1..SLOTS {
            files.register(&file, 5, 5);
        }
        assert_eq!(files.piece(start, 10).unwrap().offset, 0);
        let reused = files.register(&file, 3, 4);
        assert_eq!(region_offset(&reused), Some(start));
        assert!(files.piece(start, 10).is_err(), "longer than the new chunk");
        let piece = files.piece(start + 1, 3).unwrap();
        assert_eq!((piece.offset, piece.len, piece.ends_chunk), (4, 3, true));
        assert_eq!(files.len(), SLOTS, "bounded by the slots");
        files.written(start / FILE_CHUNK);
        assert_eq!(
            files.len(),
            0,
            "the chunks before a written one were dropped"
        );
        assert!(
            files.piece(start, 1).is_err(),
            "an unknown placeholder fails"
        );
        files.register(&file, 0, 1);
        files.flushed();
        assert_eq!(files.len(), 0);
    }

    #[test]
    fn only_region_slices_are_placeholders() {
        let file = temp_file("region", b"abc");
        let files = Placeholders::default();
        assert_eq!(region_offset(b"abc"), None);
        assert_eq!(region_offset(&region()[..0]), None, "empty");
        let p = files.register(&file, 0, 3);
        assert!(region_offset(&p[1..]).is_some());
        assert_eq!(files.register(&file, 0, 10 * FILE_CHUNK).len(), FILE_CHUNK);
    }

    #[test]
    fn a_real_socket_gets_the_file_and_a_short_file_fails() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async {
            let data: Vec<u8> = (0..FILE_CHUNK).map(|i| (i % 253) as u8).collect();
            let file = temp_file("socket", &data);
            let (mut a, b) = tokio::net::UnixStream::pair().unwrap();
            let reader = tokio::spawn(async move {
                let mut b = b;
                let mut got = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut b, &mut got)
                    .await
                    .unwrap();
                got
            });
            let files = Placeholders::default();
            let chunk = files.register(&file, 0, data.len());
            let mut left = chunk.clone();
            while !left.is_empty() {
                let slices = [IoSlice::new(&left)];
                let n = std::future::poll_fn(|cx| poll_write(&mut a, &files, cx, &slices))
                    .await
                    .unwrap();
                left.advance(n);
            }
            // The file "shrank": the entry says more bytes than there are.
            let short = files.register(&file, data.len() as u64 - 2, 4);
            let slices = [IoSlice::new(&short)];
            let n = std::future::poll_fn(|cx| poll_write(&mut a, &files, cx, &slices)).await;
            assert_eq!(n.unwrap(), 2);
            let slices = [IoSlice::new(&short[2..])];
            let n = std::future::poll_fn(|cx| poll_write(&mut a, &files, cx, &slices)).await;
            assert_eq!(n.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
            drop(a);
            let got = reader.await.unwrap();
            assert_eq!(got.len(), data.len() + 2);
            assert!(got[..data.len()] == data[..]);
        });
    }

    #[test]
    fn a_file_just_written_is_cached_and_ranges_count_whole_pages() {
        let file = temp_file("cached", &[7u8; 3 * 4096 + 10]);
        assert!(file.cached(0, 3 * 4096 + 10));
        assert!(file.cached(4095, 2));
        // SAFETY: sysconf only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        let fd = file.file.as_fd();
        if let Some((cached, pages)) = cached_pages(fd, page - 1, 2) {
            assert_eq!((cached, pages), (2, 2), "two bytes across a page boundary");
            assert_eq!(cached_pages(fd, page, page), Some((1, 1)));
            assert_eq!(cached_pages(fd, 0, 0), Some((0, 0)));
        }
    }
}
