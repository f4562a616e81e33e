//! The socket as hyper sees it: every byte passes the [`Framing`] check before hyper may parse
//! it, and reads mark the connection active for its timeouts.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::Activity;
use super::framing::Framing;
use crate::metrics::{self, Metrics};

/// What hyper reads in place of a refused request head: a minimal request that the service
/// answers with the refusal's status (see `Activity::refusal`), then end of stream.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nhost: refused\r\n\r\n";

const READ_SIZE: usize = 16 * 1024;

pub struct Checked<S> {
    inner: S,
    activity: Arc<Activity>,
    framing: Framing,
    /// Bytes read from the socket and not yet given to hyper.
    pending: BytesMut,
    /// Stream offsets: how far hyper may read, and how far it has.
    released: u64,
    given: u64,
    eof: bool,
    /// After a refusal: the bytes hyper gets instead of the rest of the stream.
    stand_in: Option<&'static [u8]>,
}

impl<S> Checked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Checked {
            inner,
            activity,
            framing: Framing::default(),
            pending: BytesMut::new(),
            released: 0,
            given: 0,
            eof: false,
            stand_in: None,
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
            if let Some(rest) = &mut this.stand_in {
                if rest.is_empty() {
                    // Never end the stream here: hyper would take it for a client that left
                    // and drop the refusal. The refusal closes the connection itself.
                    return Poll::Pending;
                }
                let n = rest.len().min(buf.remaining());
                buf.put_slice(&rest[..n]);
                *rest = &rest[n..];
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // A message cut short by the client: let hyper see exactly what came.
                this.released = this.given + this.pending.len() as u64;
                this.give(buf);
                return Poll::Ready(Ok(()));
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
            self.eof = true;
            return Poll::Ready(Ok(Step::Again));
        }
        self.arrived(n);
        match self.framing.feed(&buf.filled()[before..]) {
            Ok(released) => {
                let allowed = ((released - self.given) as usize).min(n);
                if allowed < n {
                    self.pending
                        .extend_from_slice(&buf.filled()[before + allowed..]);
                    buf.set_filled(before + allowed);
                }
                self.given += allowed as u64;
                self.released = released;
                Poll::Ready(Ok(if allowed > 0 {
                    Step::Given
                } else {
                    Step::Again
                }))
            }
            Err(violation) => {
                buf.set_filled(before);
                Poll::Ready(self.refuse(violation).map(|()| Step::Again))
            }
        }
    }

    /// Reads into `pending`, behind bytes already held back.
    fn read_buffered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Step>> {
        let n = match read_more(&mut self.inner, &mut self.pending, cx) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        if n == 0 {
            self.eof = true;
            return Poll::Ready(Ok(Step::Again));
        }
        self.arrived(n);
        let start = self.pending.len() - n;
        match self.framing.feed(&self.pending[start..]) {
            Ok(released) => {
                self.released = released;
                Poll::Ready(Ok(Step::Again))
            }
            Err(violation) => Poll::Ready(self.refuse(violation).map(|()| Step::Again)),
        }
    }

    fn arrived(&self, n: usize) {
        self.activity.bytes_arrived();
        Metrics::add(&metrics::current().bytes_in, n as u64);
    }

    /// The check refused the stream: hyper gets nothing more of it. Inside a body that is a
    /// read error (the app sees a disconnect); otherwise a stand-in request that the service
    /// answers with the refusal.
    fn refuse(&mut self, violation: super::framing::Violation) -> io::Result<()> {
        let _ = self.activity.refusal.set(violation);
        self.pending.clear();
        self.released = self.given;
        if self.framing.in_body() {
            self.eof = true;
            return Err(io::Error::new(io::ErrorKind::InvalidData, violation.1));
        }
        self.stand_in = Some(STAND_IN);
        Ok(())
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

impl<S: AsyncWrite + Unpin> AsyncWrite for Checked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A socket that returns the given chunks, one per read, then end of stream.
    struct Chunks(VecDeque<&'static [u8]>);

    impl AsyncRead for Chunks {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(chunk) = self.get_mut().0.pop_front() {
                buf.put_slice(chunk);
            }
            Poll::Ready(Ok(()))
        }
    }

    /// Every read hyper would make, until end of stream: what each one gave it.
    fn reads(chunks: &[&'static [u8]]) -> (Vec<Vec<u8>>, Option<io::ErrorKind>) {
        let mut checked = Checked::new(Chunks(chunks.iter().copied().collect()), {
            Arc::new(super::super::conn::Activity::new())
        });
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = Vec::new();
        for _ in 0..16 {
            let mut space = [0u8; 64];
            let mut buf = ReadBuf::new(&mut space);
            match Pin::new(&mut checked).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return (out, None),
                Poll::Ready(Ok(())) => out.push(buf.filled().to_vec()),
                Poll::Ready(Err(e)) => return (out, Some(e.kind())),
                Poll::Pending => break,
            }
        }
        (out, None)
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
}
