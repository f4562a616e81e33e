//! Streams a file for `http.response.pathsend`, chunk by chunk as hyper asks for the next one.
//!
//! Each open and read is a blocking call on tokio's blocking pool, so the I/O thread never
//! waits on the disk. At most one chunk is being read at a time and hyper buffers a bounded
//! number of them, so memory stays bounded whatever the file's size and the client's speed.
//!
//! On a plain HTTP/1.1 connection the chunks are placeholders instead, which the socket's
//! writer sends with sendfile(2) (see `sendfile.rs`): only the open is a blocking call then,
//! and the read of any chunk that is not in the page cache.
//! Under TLS and HTTP/2 the file's bytes pass through user space, as they must.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

pub use super::sendfile::FILE_CHUNK;

/// The most the first read takes: the file's size is not known before it is opened, and a
/// small file (the common case) should cost one trip to the blocking pool and little memory.
const FIRST_CHUNK: usize = 64 * 1024;
use super::sendfile::{OpenFile, Placeholders};

pub struct FileStream {
    path: PathBuf,
    state: State,
}

enum State {
    /// A blocking task is opening the file (and reading its first chunk), or reading the next.
    Busy(JoinHandle<io::Result<(Reader, Bytes)>>),
    Idle(Reader),
    Done,
}

/// The open file and how far it has been read. The length is the one the file had when it
/// was opened: a file that shrinks meanwhile is an error, one that grows is cut there.
struct Reader {
    file: Arc<OpenFile>,
    offset: u64,
    len: u64,
}

impl Reader {
    fn open(path: PathBuf) -> io::Result<Reader> {
        let file = File::open(&path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(Reader {
            file: Arc::new(OpenFile { file, path }),
            offset: 0,
            len: meta.len(),
        })
    }

    /// The next chunk as a placeholder in `files` (at least one byte must be left).
    fn placeholder(&mut self, files: &Placeholders) -> Bytes {
        let want = self.next_len(FILE_CHUNK);
        let chunk = files.register(&self.file, self.offset, want);
        self.offset += chunk.len() as u64;
        chunk
    }

    /// True when the next chunk is in the page cache: sendfile would not wait for the disk.
    fn next_is_cached(&self) -> bool {
        self.file.cached(self.offset, self.next_len(FILE_CHUNK))
    }

    /// Bytes the next chunk will have, at most `max`.
    fn next_len(&self, max: usize) -> usize {
        (self.len - self.offset).min(max as u64) as usize
    }

    /// Reads the next chunk into `buf` (empty at the end of the file). `buf` was allocated
    /// by the I/O thread, which also frees the chunk once hyper has written it: memory a
    /// blocking-pool thread allocated and another thread freed stays in that thread's heap
    /// while it idles (with 64 downloads under TLS that was ~500 MB of RSS).
    fn read_chunk(mut self, mut buf: BytesMut) -> io::Result<(Reader, Bytes)> {
        let want = self.next_len(buf.capacity().min(FILE_CHUNK));
        buf.resize(want, 0);
        let mut filled = 0;
        while filled < want {
            match self
                .file
                .file
                .read_at(&mut buf[filled..], self.offset + filled as u64)
            {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file became shorter while it was sent",
                    ))
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.offset += want as u64;
        Ok((self, buf.freeze()))
    }
}

impl FileStream {
    /// Starts opening `path` (one blocking task opens it and, unless `sendfile`, reads the
    /// first chunk, so a small file costs one trip to the blocking pool); must be called on
    /// the I/O runtime. `sendfile`: the chunks will be placeholders (see [`Self::poll_chunk`]).
    pub fn open(path: PathBuf, sendfile: bool) -> Self {
        let p = path.clone();
        let buf = (!sendfile).then(|| BytesMut::with_capacity(FIRST_CHUNK));
        let task = tokio::task::spawn_blocking(move || {
            let reader = Reader::open(p)?;
            match buf {
                None => Ok((reader, Bytes::new())),
                Some(buf) => reader.read_chunk(buf),
            }
        });
        FileStream {
            path,
            state: State::Busy(task),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The next chunk; `None` once the whole file was read. With `files` (a plain
    /// connection's, and the stream opened for sendfile), placeholders registered there.
    pub fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
        files: Option<&Placeholders>,
    ) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            match &mut self.state {
                State::Busy(task) => {
                    let done = match Pin::new(task).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(r) => r
                            .map_err(|e| io::Error::other(format!("file task failed: {e}")))
                            .and_then(|r| r),
                    };
                    match done {
                        Ok((reader, chunk)) => {
                            self.state = State::Idle(reader);
                            if !chunk.is_empty() {
                                return Poll::Ready(Some(Ok(chunk)));
                            }
                        }
                        Err(e) => {
                            self.state = State::Done;
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                }
                State::Idle(reader) => match files {
                    Some(files) if reader.offset < reader.len && reader.next_is_cached() => {
                        return Poll::Ready(Some(Ok(reader.placeholder(files))));
                    }
                    _ => self.read_next(),
                },
                State::Done => return Poll::Ready(None),
            }
        }
    }

    /// Starts reading the next chunk on the blocking pool, or ends the stream.
    fn read_next(&mut self) {
        if let State::Idle(reader) = std::mem::replace(&mut self.state, State::Done) {
            if reader.offset < reader.len {
                let buf = BytesMut::with_capacity(reader.next_len(FILE_CHUNK));
                let task = tokio::task::spawn_blocking(move || reader.read_chunk(buf));
                self.state = State::Busy(task);
            }
        }
    }

    /// True once the last chunk was handed out (the next poll returns `None`).
    pub fn is_done(&self) -> bool {
        match &self.state {
            State::Done => true,
            State::Idle(r) => r.offset >= r.len,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::io::Write;

    fn read_all(path: PathBuf) -> io::Result<Vec<u8>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut stream = FileStream::open(path, false);
            let mut out = Vec::new();
            while let Some(chunk) = poll_fn(|cx| stream.poll_chunk(cx, None)).await {
                let chunk = chunk?;
                assert!(chunk.len() <= FILE_CHUNK && !chunk.is_empty());
                out.extend_from_slice(&chunk);
            }
            assert!(stream.is_done());
            Ok(out)
        })
    }

    #[test]
    fn reads_files_of_many_sizes() {
        let dir = std::env::temp_dir().join(format!("rsgi-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for size in [
            0,
            1,
            FILE_CHUNK - 1,
            FILE_CHUNK,
            FILE_CHUNK + 1,
            3 * FILE_CHUNK + 7,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let path = dir.join(format!("f{size}"));
            std::fs::File::create(&path)
                .unwrap()
                .write_all(&data)
                .unwrap();
            assert_eq!(read_all(path).unwrap(), data, "size {size}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// For sendfile, the chunks are placeholders that cover the file once, in order.
    #[test]
    fn placeholders_cover_the_file() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let path = std::env::temp_dir().join(format!("rsgi-file-ph-{}", std::process::id()));
        let size = 2 * FILE_CHUNK + 3;
        std::fs::write(&path, vec![7u8; size]).unwrap();
        let files = Placeholders::default();
        let lens = rt.block_on(async {
            let mut stream = FileStream::open(path.clone(), true);
            let mut lens = Vec::new();
            while let Some(chunk) = poll_fn(|cx| stream.poll_chunk(cx, Some(&files))).await {
                lens.push(chunk.unwrap().len());
            }
            assert!(stream.is_done());
            lens
        });
        std::fs::remove_file(&path).unwrap();
        assert_eq!(lens, [FILE_CHUNK, FILE_CHUNK, 3]);
    }

    #[test]
    fn missing_file_and_directory_fail() {
        assert!(read_all(PathBuf::from("/nonexistent/rsgi")).is_err());
        assert!(read_all(std::env::temp_dir()).is_err());
    }
}
