//! The socket as hyper sees it: every byte passes the [`Framing`] check before hyper may parse
//! it, and reads mark the connection active for its timeouts.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::activity::{Activity, Refused};
use super::framing::Framing;
use super::limits::Refusal;
use super::sendfile::{self, Sendfile};
use crate::metrics::{self, Metrics};

/// What hyper reads in place of a refused request head: a minimal request that the service
/// answers with the refusal's status (see `Activity::refusal`); nothing follows it.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nhost: refused\r\n\r\n";

const READ_SIZE: usize = 16 * 1024;

/// The most [`Checked::poll_first_head`] reads at once: a whole head, in the common case.
const FIRST_READ: usize = 4096;

/// At most this much is kept back past an upgrade request (see `Framing::held`): the first
/// frames of the protocol the connection may switch to, which a client may send at once.
const HELD_LIMIT: usize = 64 * 1024;

pub struct Checked<S> {
    inner: S,
    activity: Arc<Activity>,
    framing: Framing,
    /// Bytes read from the socket and not yet given to hyper.
    pending: BytesMut,
    /// Stream offsets: how far hyper may read, and how far it has.
    released: u64,
    given: u64,
    /// What hyper gets once it has every released byte.
    after: After,
}

/// What follows the released bytes.
enum After {
    /// More of the socket.
    Socket,
    /// The client closed its side.
    Eof,
    /// A request head was refused: this stand-in (what hyper has not read of it yet).
    StandIn(&'static [u8]),
    /// A chunked body was refused: every read fails, and so does the body. hyper reads a body
    /// only after handing its request to the service, so the service answers the failure.
    BodyError(&'static str),
}

impl<S> Checked<S> {
    /// `line_limit`: the longest request line accepted (`--limit-request-line`).
    pub fn new(inner: S, activity: Arc<Activity>, line_limit: usize) -> Self {
        Checked {
            inner,
            activity,
            framing: Framing::new(line_limit),
            pending: BytesMut::new(),
            released: 0,
            given: 0,
            after: After::Socket,
        }
    }

    /// The socket back (after a protocol switch), with the bytes read from it that hyper has
    /// not been given yet.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.inner, self.pending)
    }

    /// Copies what hyper may have into `buf`; false when there is nothing to give.
    fn give(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let ready = (self.released - self.given) as usize;
        if ready == 0 {
            return false;
        }
        let n = ready.min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        self.given += n as u64;
        if self.pending.is_empty() {
            // Back to direct reads: an idle connection holds no read buffer of its own.
            self.pending = BytesMut::new();
        }
        true
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Checked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.give(buf) {
                return Poll::Ready(Ok(()));
            }
            match &mut this.after {
                After::Socket => {}
                After::Eof if this.framing.held() => {
                    // What follows an upgrade request is never HTTP for hyper to parse.
                    return Poll::Ready(Ok(()));
                }
                After::Eof => {
                    // A message cut short by the client: let hyper see exactly what came.
                    this.released = this.given + this.pending.len() as u64;
                    this.give(buf);
                    return Poll::Ready(Ok(()));
                }
                After::StandIn([]) => {
                    // Never end the stream here: hyper would take it for a client that left
                    // and drop the refusal. The refusal closes the connection itself.
                    return Poll::Pending;
                }
                After::StandIn(rest) => {
                    let n = rest.len().min(buf.remaining());
                    buf.put_slice(&rest[..n]);
                    *rest = &rest[n..];
                    return Poll::Ready(Ok(()));
                }
                After::BodyError(why) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, *why)));
                }
            }
            if this.framing.held() && this.pending.len() >= HELD_LIMIT {
                // Enough kept back. hyper reads here only to notice a client that left; it
                // polls again after its own progress, and the connection then switches
                // protocols or closes.
                return Poll::Pending;
            }
            let read = if this.pending.is_empty() {
                this.read_direct(cx, buf)
            } else {
                this.read_buffered(cx)
            };
            match read {
                Poll::Ready(Ok(Step::Given)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(Step::Again)) => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// What a read from the socket left to do.
enum Step {
    /// Checked bytes are in hyper's buffer.
    Given,
    /// Nothing for hyper yet: look again (buffered bytes, end of stream, or a refusal).
    Again,
}

impl<S: AsyncRead + Unpin> Checked<S> {
    /// Reads until the first request head is complete, refused, or cut short by the client
    /// (or the socket fails), holding what came in `pending`, which grows only to what came:
    /// Ready once there is something for hyper to read. Reads go through a buffer on the
    /// stack, so the connection's task holds none while it waits.
    pub fn poll_first_head(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.released == self.given && matches!(self.after, After::Socket) {
            let mut space = [std::mem::MaybeUninit::<u8>::uninit(); FIRST_READ];
            let mut chunk = ReadBuf::uninit(&mut space);
            match Pin::new(&mut self.inner).poll_read(cx, &mut chunk) {
                Poll::Pending => return Poll::Pending,
                // hyper's own read meets the failure again.
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {}
            }
            let chunk = chunk.filled();
            if chunk.is_empty() {
                self.after = After::Eof;
                break;
            }
            self.arrived(chunk.len());
            self.pending.extend_from_slice(chunk);
            let verdict = self.framing.feed(chunk);
            self.released = self.framing.released();
            if let Err(violation) = verdict {
                self.pending.truncate((self.released - self.given) as usize);
                self.refuse(violation);
            }
        }
        Poll::Ready(())
    }

    /// Reads straight into hyper's buffer when nothing is held back, the common case: the
    /// bytes the check releases stay there, and only the rest (a head not yet complete) is
    /// copied aside into `pending`.
    fn read_direct(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<Step>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let n = buf.filled().len() - before;
        if n == 0 {
            self.after = After::Eof;
            return Poll::Ready(Ok(Step::Again));
        }
        self.arrived(n);
        let verdict = self.framing.feed(&buf.filled()[before..]);
        // Even on a violation, the bytes released before it stay: they are whole requests
        // (or the checked part of the refused body), to be answered first.
        let released = self.framing.released();
        let allowed = ((released - self.given) as usize).min(n);
        match verdict {
            Ok(_) if allowed < n => {
                self.pending
                    .extend_from_slice(&buf.filled()[before + allowed..]);
            }
            Ok(_) => {}
            Err(violation) => self.refuse(violation),
        }
        buf.set_filled(before + allowed);
        self.given += allowed as u64;
        self.released = released;
        Poll::Ready(Ok(if allowed > 0 {
            Step::Given
        } else {
            Step::Again
        }))
    }

    /// Reads into `pending`, behind bytes already held back.
    fn read_buffered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Step>> {
        let n = match read_more(&mut self.inner, &mut self.pending, cx) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        if n == 0 {
            self.after = After::Eof;
            return Poll::Ready(Ok(Step::Again));
        }
        self.arrived(n);
        let start = self.pending.len() - n;
        let verdict = self.framing.feed(&self.pending[start..]);
        self.released = self.framing.released();
        if let Err(violation) = verdict {
            // As in `read_direct`: what was released before the violation stays.
            self.pending.truncate((self.released - self.given) as usize);
            self.refuse(violation);
        }
        Poll::Ready(Ok(Step::Again))
    }

    fn arrived(&self, n: usize) {
        self.activity.bytes_arrived();
        Metrics::add(&metrics::current().bytes_in, n as u64);
    }

    /// The check refused the stream: past the bytes it released, hyper gets nothing more of
    /// it. Inside a body that is a read error (the app sees a disconnect, the client a 400
    /// unless the response has started); otherwise a stand-in request that the service
    /// answers with the refusal, once it has answered the requests before it.
    fn refuse(&mut self, violation: Refusal) {
        self.after = if self.framing.in_body() {
            After::BodyError(violation.1)
        } else {
            let head = self.framing.heads();
            let _ = self.activity.refusal.set(Refused { head, violation });
            After::StandIn(STAND_IN)
        };
    }
}

/// Reads from the socket into the spare capacity of `pending`; returns the count read.
fn read_more<S: AsyncRead + Unpin>(
    inner: &mut S,
    pending: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    pending.reserve(READ_SIZE);
    let spare = pending.spare_capacity_mut();
    let mut rb = ReadBuf::uninit(spare);
    match Pin::new(inner).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) => {
            let n = rb.filled().len();
            // SAFETY: `poll_read` initialised exactly `n` bytes at the start of the spare
            // capacity, which is where `ReadBuf::uninit` pointed it.
            unsafe { pending.set_len(pending.len() + n) };
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

impl<S> Checked<S> {
    /// Tells the connection's write timeout whether this write made progress.
    fn wrote<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match &poll {
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(_) => self.activity.write_progressed(),
        }
        poll
    }
}

/// Writes go to the socket as they are, except on a connection that sends files with
/// sendfile: there, file placeholders among the buffers are sent from their file.
impl<S: AsyncWrite + Sendfile + Unpin> AsyncWrite for Checked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = match this.activity.files() {
            Some(files) => {
                sendfile::poll_write(&mut this.inner, files, cx, &[io::IoSlice::new(buf)])
            }
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
        };
        this.wrote(poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = match this.activity.files() {
            Some(files) => sendfile::poll_write(&mut this.inner, files, cx, bufs),
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        };
        this.wrote(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(files) = this.activity.files() {
            // hyper flushes the socket once its write buffer is empty (`Buffered::poll_flush`).
            files.flushed();
        }
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.wrote(poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A socket that returns the given chunks, one per read (as much as fits), then end of
    /// stream.
    struct Chunks(VecDeque<Vec<u8>>);

    impl AsyncRead for Chunks {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let chunks = &mut self.get_mut().0;
            if let Some(mut chunk) = chunks.pop_front() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                if n < chunk.len() {
                    chunks.push_front(chunk.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    /// What hyper would see of a stream arriving in `chunks`.
    struct Seen {
        /// What each read gave it, until end of stream, an error, or a wait.
        reads: Vec<Vec<u8>>,
        error: Option<io::ErrorKind>,
        refusal: Option<Refused>,
    }

    fn seen(chunks: Vec<Vec<u8>>) -> Seen {
        let activity = Arc::new(super::super::activity::Activity::new(None));
        let mut checked = Checked::new(Chunks(chunks.into()), activity.clone(), usize::MAX);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // As a connection does: hyper comes in once the first head is there.
        assert!(checked.poll_first_head(&mut cx).is_ready());
        let mut seen = Seen {
            reads: Vec::new(),
            error: None,
            refusal: None,
        };
        loop {
            let mut space = [0u8; 64];
            let mut buf = ReadBuf::new(&mut space);
            match Pin::new(&mut checked).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
                Poll::Ready(Ok(())) => seen.reads.push(buf.filled().to_vec()),
                Poll::Ready(Err(e)) => {
                    seen.error = Some(e.kind());
                    break;
                }
                Poll::Pending => break,
            }
        }
        seen.refusal = activity.refusal.get().copied();
        seen
    }

    fn reads(chunks: &[&'static [u8]]) -> (Vec<Vec<u8>>, Option<io::ErrorKind>) {
        let seen = seen(chunks.iter().map(|c| c.to_vec()).collect());
        (seen.reads, seen.error)
    }

    #[test]
    fn a_whole_head_goes_straight_through() {
        let head: &[u8] = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        assert_eq!(reads(&[head]).0, vec![head.to_vec()]);
    }

    #[test]
    fn a_split_head_is_held_back_until_complete() {
        let (got, err) = reads(&[b"GET / HTTP/1.1\r\nho", b"st: a\r\n", b"\r\n"]);
        assert_eq!(err, None);
        assert_eq!(got, vec![b"GET / HTTP/1.1\r\nhost: a\r\n\r\n".to_vec()]);
    }

    #[test]
    fn a_refused_head_never_reaches_hyper() {
        let (got, _) = reads(&[b"GET / HTTP/1.1\r\nhost: a\r\nbad header\r\n\r\n"]);
        assert_eq!(got.concat(), STAND_IN);
    }

    #[test]
    fn a_bad_chunk_ends_the_body_with_an_error() {
        let head: &[u8] = b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n";
        let (got, err) = reads(&[head, b"zz\r\n"]);
        assert_eq!(got.concat(), head);
        assert_eq!(err, Some(io::ErrorKind::InvalidData));
    }

    /// Cuts `stream` at every offset in `cuts`.
    fn split(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut parts = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain([stream.len()].iter()) {
            if cut > start && cut <= stream.len() {
                parts.push(stream[start..cut].to_vec());
                start = cut;
            }
        }
        parts
    }

    /// Checks that hyper sees the same bytes, error and refusal whichever way `stream` is cut
    /// into reads: in one, at each single offset, and byte by byte. Returns that outcome.
    fn same_whatever_the_reads(stream: &[u8]) -> Seen {
        let whole = seen(vec![stream.to_vec()]);
        let mut ways: Vec<Vec<usize>> = (1..stream.len()).map(|cut| vec![cut]).collect();
        ways.push((1..stream.len()).collect());
        for cuts in ways {
            let other = seen(split(stream, &cuts));
            let what = format!("cut at {cuts:?}");
            assert_eq!(other.reads.concat(), whole.reads.concat(), "{what}");
            assert_eq!(other.error, whole.error, "{what}");
            assert_eq!(other.refusal, whole.refusal, "{what}");
        }
        whole
    }

    #[test]
    fn requests_before_a_refused_head_reach_hyper_before_the_stand_in() {
        let valid: &[u8] =
            b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.0\r\n\r\n";
        let stream = [
            valid,
            b"GET /bad HTTP/1.1\r\nHost: x\r\r\n\r\nGET /never HTTP/1.1\r\n",
        ]
        .concat();
        let seen = same_whatever_the_reads(&stream);
        assert_eq!(seen.reads.concat(), [valid, STAND_IN].concat());
        assert_eq!(seen.error, None);
        let refused = seen.refusal.expect("a refusal");
        assert_eq!(refused.head, 2, "the third request is the refused one");
        assert_eq!(refused.violation.0, http::StatusCode::BAD_REQUEST);
    }

    /// A client dripping a head costs what it sent: the first head is held in a buffer of its
    /// size until it is whole.
    #[test]
    fn a_partial_first_head_holds_only_its_bytes() {
        struct Drip(VecDeque<&'static [u8]>);
        impl AsyncRead for Drip {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut().0.pop_front() {
                    Some(part) => {
                        buf.put_slice(part);
                        Poll::Ready(Ok(()))
                    }
                    None => Poll::Pending,
                }
            }
        }
        let activity = Arc::new(super::super::activity::Activity::new(None));
        let parts: [&'static [u8]; 3] = [b"G", b"ET / HTTP/1.1\r\nhost: a\r\n", b"\r\n"];
        let mut checked = Checked::new(Drip(parts[..1].to_vec().into()), activity, 8190);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(checked.poll_first_head(&mut cx).is_pending());
        assert!(
            checked.pending.capacity() < 64,
            "{}",
            checked.pending.capacity()
        );
        checked.inner.0.extend(&parts[1..]);
        assert!(checked.poll_first_head(&mut cx).is_ready());
        let mut space = [0u8; 64];
        let mut buf = ReadBuf::new(&mut space);
        assert!(Pin::new(&mut checked)
            .poll_read(&mut cx, &mut buf)
            .is_ready());
        assert_eq!(buf.filled(), parts.concat());
    }

    #[test]
    fn what_follows_an_upgrade_request_is_kept_for_the_switch() {
        let head: &[u8] = b"GET /ws HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\n\r\n";
        let after: &[u8] = b"\x81\x85frameGET /smuggled HTTP/1.1\r\nhost: a\r\n\r\n";
        let activity = Arc::new(super::super::activity::Activity::new(None));
        let mut checked = Checked::new(
            Chunks([head, after].map(<[u8]>::to_vec).into()),
            activity,
            8190,
        );
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut got = Vec::new();
        loop {
            let mut space = [0u8; 64];
            let mut buf = ReadBuf::new(&mut space);
            match Pin::new(&mut checked).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
                Poll::Ready(Ok(())) => got.extend_from_slice(buf.filled()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, head, "hyper gets the head, then the end of the stream");
        let (_, held) = checked.into_parts();
        assert_eq!(&held[..], after, "the rest goes to the switched protocol");
    }

    #[test]
    fn a_bad_chunk_read_with_its_head_still_lets_the_head_through() {
        let head: &[u8] = b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n";
        for bad in [&b"zz\r\n"[..], b"ffffffffffffffffff\r\n", b"5\r\nhelloXX"] {
            let seen = same_whatever_the_reads(&[head, bad].concat());
            let checked = &bad[..bad.iter().position(|&b| b == b'X').unwrap_or(0)];
            assert_eq!(seen.reads.concat(), [head, checked].concat());
            assert_eq!(seen.error, Some(io::ErrorKind::InvalidData));
            assert_eq!(seen.refusal, None, "a body refusal makes no stand-in");
        }
    }
}
