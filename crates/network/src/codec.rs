//! The request-response wire format: one frame per stream direction, a big-endian `u32` length
//! followed by that many opaque bytes.
//!
//! Written by hand rather than using libp2p's cbor/json codecs so that the length is checked
//! against the limit before anything is allocated, and so that the bytes stay opaque (the node
//! decodes them with its own bounded decoder).

use std::{future::Future, io, pin::Pin};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{request_response, StreamProtocol};

/// Why a frame was refused. Carried inside `io::Error` (the codec trait's error type) so the
/// driver can tell a misbehaving peer from an ordinary connection failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    TooLarge { len: u64, limit: usize },
    #[error("frame announced {len} bytes but the stream ended after {got}")]
    Truncated { len: usize, got: usize },
}

impl WireError {
    /// The `WireError` inside an io error produced by this codec, if any.
    pub(crate) fn from_io(e: &io::Error) -> Option<&WireError> {
        e.get_ref()?.downcast_ref::<WireError>()
    }
}

impl From<WireError> for io::Error {
    fn from(e: WireError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Initial buffer for a frame body; the buffer then grows only as bytes actually arrive, so a
/// peer announcing a large frame and sending nothing costs us nothing.
const INITIAL_BUFFER: usize = 64 * 1024;

/// Reads one frame of at most `limit` bytes.
pub(crate) async fn read_frame<T>(io: &mut T, limit: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix);
    let len = match usize::try_from(len) {
        Ok(len) if len <= limit => len,
        _ => {
            return Err(WireError::TooLarge {
                len: len.into(),
                limit,
            }
            .into())
        }
    };
    let mut buf = Vec::with_capacity(len.min(INITIAL_BUFFER));
    // `take` stops at the announced length, so trailing bytes are never read into memory.
    (&mut *io).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(WireError::Truncated {
            len,
            got: buf.len(),
        }
        .into());
    }
    Ok(buf)
}

/// Writes one frame. Callers check the size against their own limits first; this only guards
/// the `u32` length prefix.
pub(crate) async fn write_frame<T>(io: &mut T, data: &[u8]) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    let len = u32::try_from(data.len()).map_err(|_| WireError::TooLarge {
        len: data.len() as u64,
        limit: u32::MAX as usize,
    })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(data).await?;
    io.flush().await
}

/// Opaque bytes in, opaque bytes out, with separate limits for requests and responses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WireCodec {
    pub(crate) max_request: usize,
    pub(crate) max_response: usize,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

// `request_response::Codec` is declared with `#[async_trait]`; async-trait is not a dependency of
// this crate, so the methods are written in the form that macro expands to.
impl request_response::Codec for WireCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    fn read_request<'life0, 'life1, 'life2, 'async_trait, T>(
        &'life0 mut self,
        _protocol: &'life1 StreamProtocol,
        io: &'life2 mut T,
    ) -> BoxFuture<'async_trait, io::Result<Vec<u8>>>
    where
        T: AsyncRead + Unpin + Send + 'async_trait,
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        let limit = self.max_request;
        Box::pin(async move { read_frame(io, limit).await })
    }

    fn read_response<'life0, 'life1, 'life2, 'async_trait, T>(
        &'life0 mut self,
        _protocol: &'life1 StreamProtocol,
        io: &'life2 mut T,
    ) -> BoxFuture<'async_trait, io::Result<Vec<u8>>>
    where
        T: AsyncRead + Unpin + Send + 'async_trait,
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        let limit = self.max_response;
        Box::pin(async move { read_frame(io, limit).await })
    }

    fn write_request<'life0, 'life1, 'life2, 'async_trait, T>(
        &'life0 mut self,
        _protocol: &'life1 StreamProtocol,
        io: &'life2 mut T,
        req: Vec<u8>,
    ) -> BoxFuture<'async_trait, io::Result<()>>
    where
        T: AsyncWrite + Unpin + Send + 'async_trait,
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move { write_frame(io, &req).await })
    }

    fn write_response<'life0, 'life1, 'life2, 'async_trait, T>(
        &'life0 mut self,
        _protocol: &'life1 StreamProtocol,
        io: &'life2 mut T,
        res: Vec<u8>,
    ) -> BoxFuture<'async_trait, io::Result<()>>
    where
        T: AsyncWrite + Unpin + Send + 'async_trait,
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move { write_frame(io, &res).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{executor::block_on, io::Cursor};

    fn frame(len: u32, body: &[u8]) -> Vec<u8> {
        let mut v = len.to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn round_trip_and_exact_limit() {
        let mut out = Cursor::new(Vec::new());
        block_on(write_frame(&mut out, b"hello")).unwrap();
        let bytes = out.into_inner();
        assert_eq!(bytes, frame(5, b"hello"));
        let got = block_on(read_frame(&mut Cursor::new(bytes.clone()), 5)).unwrap();
        assert_eq!(got, b"hello");
        let err = block_on(read_frame(&mut Cursor::new(bytes), 4)).unwrap_err();
        assert!(matches!(
            WireError::from_io(&err),
            Some(WireError::TooLarge { len: 5, limit: 4 })
        ));
        let empty = block_on(read_frame(&mut Cursor::new(frame(0, b"")), 0)).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading_the_body() {
        // Only the prefix is present: if the codec tried to read (or allocate) the announced
        // body it would hit the end of the stream and report Truncated instead of TooLarge.
        let err =
            block_on(read_frame(&mut Cursor::new(frame(u32::MAX, b"")), 1 << 20)).unwrap_err();
        assert!(
            matches!(
                WireError::from_io(&err),
                Some(WireError::TooLarge { len, .. }) if *len == u64::from(u32::MAX)
            ),
            "{err}"
        );
    }

    #[test]
    fn truncated_and_short_inputs_are_errors() {
        let err = block_on(read_frame(&mut Cursor::new(frame(10, b"abc")), 100)).unwrap_err();
        assert!(matches!(
            WireError::from_io(&err),
            Some(WireError::Truncated { len: 10, got: 3 })
        ));
        for short in [&[][..], &[0][..], &[0, 0, 1][..]] {
            let err = block_on(read_frame(&mut Cursor::new(short.to_vec()), 100)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
            assert!(WireError::from_io(&err).is_none());
        }
    }

    #[test]
    fn trailing_bytes_are_not_consumed() {
        let mut cur = Cursor::new(frame(2, b"abXYZ"));
        assert_eq!(block_on(read_frame(&mut cur, 10)).unwrap(), b"ab");
        assert_eq!(cur.position(), 6);
    }
}
