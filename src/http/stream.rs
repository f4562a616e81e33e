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
                if this.give(buf) {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Ok(()));
            }
            let n = match read_more(&mut this.inner, &mut this.pending, cx) {
                Poll::Ready(Ok(n)) => n,
                other => return other.map(|r| r.map(|_| ())),
            };
            if n == 0 {
                this.eof = true;
                continue;
            }
            this.activity.bytes_arrived();
            let start = this.pending.len() - n;
            match this.framing.feed(&this.pending[start..]) {
                Ok(released) => this.released = released,
                Err(violation) => {
                    let _ = this.activity.refusal.set(violation);
                    this.pending.clear();
                    this.released = this.given;
                    if this.framing.in_body() {
                        this.eof = true;
                        // hyper is inside a body: a read error ends it, and the app sees a
                        // disconnect.
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            violation.1,
                        )));
                    }
                    this.stand_in = Some(STAND_IN);
                }
            }
        }
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
