//! The protobuf codec of every taskmesh client and server: tonic-prost's, except that a
//! message that does not decode (malformed protobuf, a string field that is not UTF-8) is
//! `INVALID_ARGUMENT`, the sender's fault, rather than tonic's `INTERNAL`, which clients
//! and alerts read as a server defect. On a client the same applies to a response that does
//! not decode (a server speaking another contract).

use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};

/// The `google.rpc.ErrorInfo.domain` of every taskmesh error (AIP-193): the errors'
/// `reason`s are unique within it.
pub const ERROR_DOMAIN: &str = "taskmesh.dev";

/// The `ErrorInfo.reason` of a request message that does not decode.
pub const MALFORMED_MESSAGE: &str = "MALFORMED_MESSAGE";

/// [`ProstCodec`] with decoding failures answered `INVALID_ARGUMENT` (see the module docs).
/// The generated clients and servers create it with `default()`.
#[derive(Debug, Clone, Default)]
pub struct StrictCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Codec for StrictCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(self.0.decoder())
    }
}

/// The decoder of [`StrictCodec`].
#[derive(Debug, Clone)]
pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            if status.code() == Code::Internal {
                Status::with_error_details(
                    Code::InvalidArgument,
                    format!("the message is not valid protobuf: {}", status.message()),
                    ErrorDetails::with_error_info(MALFORMED_MESSAGE, ERROR_DOMAIN, []),
                )
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
