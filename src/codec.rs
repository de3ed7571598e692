//! The gRPC codec of every generated service and client: prost's, except that a message is
//! decoded from one contiguous slice instead of through tonic's buffer.
//!
//! tonic hands the decoder a `DecodeBuf` over the `BytesMut` that holds the whole message. Decoding
//! through it, every varint and field advances the `BytesMut` itself (~35 instructions each, about
//! 85 per report); decoding from the slice it already is advances a pointer. The messages, the
//! errors (INTERNAL with prost's text, as `tonic_prost::ProstCodec` gives) and the encoding are
//! prost's. docs/performance.md (twenty-fourth session) has the counts.

use std::marker::PhantomData;

use prost::{Message, bytes::Buf};
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::ProstEncoder;

/// [`tonic_prost::ProstCodec`] with [`SliceDecoder`] (set as `codec_path` in `build.rs`).
#[derive(Debug, Clone, Copy)]
pub struct SliceCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SliceCodec<T, U> {
    fn default() -> Self {
        SliceCodec(PhantomData)
    }
}

impl<T, U> Codec for SliceCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

/// Decodes a `U` from the message's bytes as one slice (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct SliceDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        let chunk = buf.chunk();
        let decoded = if chunk.len() == len {
            let decoded = U::decode(chunk);
            buf.advance(len);
            decoded
        } else {
            // Not one slice (tonic's buffer always is one today): through the buffer, as prost's codec.
            U::decode(buf)
        };
        decoded.map(Some).map_err(|error| Status::internal(error.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;
    use tonic::codec::Streaming;
    use tonic_prost::ProstDecoder;

    use super::*;
    use crate::proto::v1::{DataVerification, ExecutionReport, SubmitReportBatchRequest};

    /// `message` framed as one gRPC message of a request body, decoded by `decoder`.
    fn decode<D>(decoder: D, message: &[u8]) -> Result<Option<SubmitReportBatchRequest>, (tonic::Code, String)>
    where
        D: Decoder<Item = SubmitReportBatchRequest, Error = Status> + Send + 'static,
    {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
        framed.extend_from_slice(message);
        let body = http_body_util::Full::new(Bytes::from(framed));
        let mut stream = Streaming::new_request(decoder, body, None, None);
        futures::executor::block_on(stream.message()).map_err(|status| (status.code(), status.message().to_owned()))
    }

    fn report(worker: String, records: i64, errors: Vec<String>) -> ExecutionReport {
        ExecutionReport {
            worker_name: worker,
            execution_id: "0192f0c4-7a1b-7c3d-8e4f-5a6b7c8d9e0f".into(),
            duration_ms: Some(1234),
            data_verification: Some(DataVerification {
                records_processed: records,
                validation_errors: errors,
                ..Default::default()
            }),
            custom_metrics: serde_json::from_str(r#"{"tags":["a","b"],"n":1.5,"nested":{"x":null}}"#).ok(),
            ..Default::default()
        }
    }

    proptest! {
        /// Whatever the bytes — valid messages, the same cut short or with a byte changed, or
        /// noise — the slice decoder gives what prost's codec gives: the same message, or the
        /// same status.
        #[test]
        fn decodes_as_prosts_codec_does(
            reports in proptest::collection::vec(
                ("\\PC{0,24}", any::<i64>(), proptest::collection::vec("\\PC{0,12}", 0..3))
                    .prop_map(|(worker, records, errors)| report(worker, records, errors)),
                0..4,
            ),
            cut in any::<prop::sample::Index>(),
            flip in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
            noise in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let valid = SubmitReportBatchRequest { reports }.encode_to_vec();
            let mut changed = valid.clone();
            if let Some((at, byte)) = flip && !changed.is_empty() {
                let at = at.index(changed.len());
                changed[at] ^= byte;
            }
            let short = &valid[..cut.index(valid.len() + 1)];
            for message in [&valid[..], &changed[..], short, &noise[..]] {
                prop_assert_eq!(
                    decode(SliceDecoder(PhantomData), message),
                    decode(ProstDecoder::default(), message)
                );
            }
            prop_assert!(decode(SliceDecoder(PhantomData), &valid).is_ok_and(|m| m.is_some()));
        }
    }
}
