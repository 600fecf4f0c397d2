//! AMQP 1.0 framing (part 2.3 of the specification) for the Service Bus sandbox: protocol
//! headers, frames, and performatives encoded with `fe2o3-amqp-types`' types.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fe2o3_amqp_types::performatives::Performative;
use serde::{Deserialize, Serialize};
use serde_amqp::{de::Deserializer, read::IoReader};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The protocol header that opens the SASL layer.
pub(crate) const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// The protocol header that opens AMQP itself.
pub(crate) const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// The frame type of AMQP frames.
pub(crate) const AMQP_FRAME: u8 = 0;
/// The frame type of SASL frames.
pub(crate) const SASL_FRAME: u8 = 1;
/// The largest frame this end reads (and announces in its `open`).
pub(crate) const MAX_FRAME: u32 = 256 * 1024;

/// One frame as read: its channel, type and body (performative and payload).
pub(crate) struct Frame {
    pub(crate) channel: u16,
    pub(crate) kind: u8,
    pub(crate) body: Bytes,
}

/// Read one frame; `None` at the end of the stream.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let offset = usize::from(head[4]) * 4;
    if size > MAX_FRAME || (size as usize) < offset || offset < 8 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {size} bytes with data offset {offset}"),
        ));
    }
    let mut rest = vec![0u8; size as usize - 8];
    reader.read_exact(&mut rest).await?;
    Ok(Some(Frame {
        channel: u16::from_be_bytes([head[6], head[7]]),
        kind: head[5],
        body: Bytes::from(rest).slice(offset - 8..),
    }))
}

/// Read a protocol header.
pub(crate) async fn read_header<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<[u8; 8]> {
    let mut header = [0u8; 8];
    reader.read_exact(&mut header).await?;
    Ok(header)
}

/// Split an AMQP frame body into its performative (none for an empty frame: a heartbeat)
/// and the payload after it.
pub(crate) fn decode_amqp(body: Bytes) -> Result<(Option<Performative>, Bytes), serde_amqp::Error> {
    if body.is_empty() {
        return Ok((None, body));
    }
    let mut rest = BytesMut::from(&body[..]);
    let performative = {
        let mut de = Deserializer::new(IoReader::new((&mut rest).reader()));
        Performative::deserialize(&mut de)?
    };
    Ok((Some(performative), rest.freeze()))
}

/// Decode a SASL frame body as `T`.
pub(crate) fn decode_sasl<T: for<'de> Deserialize<'de>>(
    body: &[u8],
) -> Result<T, serde_amqp::Error> {
    serde_amqp::from_slice(body)
}

/// Encode a frame: `body` (an encoded performative) then `payload`.
pub(crate) fn frame(channel: u16, kind: u8, body: &[u8], payload: &[u8]) -> Vec<u8> {
    let size = 8 + body.len() + payload.len();
    let mut out = BytesMut::with_capacity(size);
    out.put_u32(u32::try_from(size).unwrap_or(u32::MAX));
    out.put_u8(2);
    out.put_u8(kind);
    out.put_u16(channel);
    out.put_slice(body);
    out.put_slice(payload);
    out.to_vec()
}

/// Encode `value` with AMQP's type system.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding our own well-formed values cannot fail: the types are fe2o3's.
    serde_amqp::to_vec(value).unwrap_or_default()
}
