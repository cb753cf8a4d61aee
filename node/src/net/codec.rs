//! The request-response codec: an unsigned varint length, then that many bytes of canonical
//! postcard. Lengths over the protocol's limit are refused before any allocation.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{Serialize, de::DeserializeOwned};
use std::io;
use std::marker::PhantomData;
use wattmesh_protocol::codec;

/// A postcard codec for request type `Req` and response type `Resp`, with a size limit.
#[derive(Debug)]
pub struct PostcardCodec<Req, Resp> {
    limit: usize,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> PostcardCodec<Req, Resp> {
    /// A codec refusing messages over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        PostcardCodec {
            limit,
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> Clone for PostcardCodec<Req, Resp> {
    fn clone(&self) -> Self {
        PostcardCodec::new(self.limit)
    }
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, limit: usize) -> io::Result<Vec<u8>> {
    let mut len: u64 = 0;
    for i in 0..10 {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        len |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            break;
        }
        if i == 9 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "length varint too long",
            ));
        }
    }
    if len > limit as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes is over the limit of {limit}"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let mut len = bytes.len() as u64;
    let mut head = Vec::with_capacity(10);
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            head.push(b);
            break;
        }
        head.push(b | 0x80);
    }
    io.write_all(&head).await?;
    io.write_all(bytes).await?;
    io.close().await
}

fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8], limit: usize) -> io::Result<T> {
    codec::decode_canonical(bytes, limit).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl<Req, Resp> libp2p::request_response::Codec for PostcardCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send + 'static,
    Resp: Serialize + DeserializeOwned + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_frame(io, self.limit).await?;
        decode(&bytes, self.limit)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_frame(io, self.limit).await?;
        decode(&bytes, self.limit)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &codec::encode(&req)).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &codec::encode(&res)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[test]
    fn frames_round_trip_and_oversized_lengths_are_refused() {
        futures::executor::block_on(async {
            let mut buf = Cursor::new(Vec::new());
            write_frame(&mut buf, &[7u8; 300]).await.unwrap();
            let bytes = buf.into_inner();
            assert_eq!(&bytes[..2], &[0xac, 0x02]);
            let mut r = Cursor::new(bytes.clone());
            assert_eq!(read_frame(&mut r, 300).await.unwrap(), vec![7u8; 300]);
            let mut r = Cursor::new(bytes);
            assert!(read_frame(&mut r, 299).await.is_err());
            // A length varint that never ends.
            let mut r = Cursor::new(vec![0xff; 20]);
            assert!(read_frame(&mut r, usize::MAX).await.is_err());
        });
    }
}
